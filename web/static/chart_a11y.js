// The charts (charts.js) to assistive technology and the keyboard. uPlot draws on a canvas: the
// drawing is one image whose label says what it shows (the legend beside it stays text). A click
// on a legend entry shows or hides its line: each entry is also a button that Tab reaches and
// Enter or Space presses, "pressed" while its line is shown.

export function describeChart(spec) {
  const unit = spec.unit ? ` (${spec.unit})` : "";
  const lines = spec.series.map((s) => s.label).join(", ");
  const thresholds = spec.faults ? "; dashed lines at the warning and alarm thresholds" : "";
  return `${spec.title}${unit} over time: ${lines}${thresholds}.`;
}

export function makeAccessible(plot, spec) {
  const wrap = plot.root.querySelector(".u-wrap");
  wrap.setAttribute("role", "img");
  wrap.setAttribute("aria-label", describeChart(spec));
  const rows = [...plot.root.querySelectorAll(".u-legend tr.u-series")].slice(1); // [0]: the time
  const pressed = () => rows.forEach((tr) => {
    tr.querySelector("th").setAttribute("aria-pressed", String(!tr.classList.contains("u-off")));
  });
  for (const tr of rows) {
    const th = tr.querySelector("th");
    th.tabIndex = 0;
    th.setAttribute("role", "button");
    th.addEventListener("click", pressed); // after uPlot's own (ctrl-click isolates: every entry changes)
    th.addEventListener("keydown", (ev) => {
      if (ev.key !== "Enter" && ev.key !== " ") return;
      ev.preventDefault();
      th.click();
    });
  }
  pressed();
}
