// The report page's "Label a time range" card: a machine, a time range (local time in the
// browser, sent as UTC), a fault class and intensity (or healthy), posted to /api/labels; the
// machine's recent labels listed below. The labels are training data: the card links the
// labelled export (/generate_csv?labelled=1), the file `fdedge train --csv` takes.

import { $, el, errorText, getJSON } from "./common.js";
import { labelForm, labelText, postLabel } from "./labels.js";

function field(label, input) {
  const l = el("label", "ack-field");
  l.append(el("span", null, label), input);
  return l;
}

function utc(local) {
  const t = new Date(local); // datetime-local: the browser's local time
  return Number.isNaN(t.getTime()) ? null : t.toISOString().replace(/\.\d{3}Z$/, "Z");
}

export function labelRangeCard(model) {
  const box = $("label-range-form");
  const machine = el("input");
  machine.name = "machine";
  machine.setAttribute("list", "label-machines");
  machine.maxLength = 64;
  const machines = el("datalist");
  machines.id = "label-machines";
  const start = el("input");
  start.type = "datetime-local";
  start.step = 1;
  start.name = "label-start";
  const end = el("input");
  end.type = "datetime-local";
  end.step = 1;
  end.name = "label-end";
  const fault = el("select");
  fault.name = "label-fault";
  const category = new Map((model.catalogue || []).map((c) => [c.fault, c.category]));
  for (const f of [...(model.faults || []), "healthy"]) {
    const o = el("option", null, category.has(f) ? `${f} · ${category.get(f)}` : f);
    o.value = f;
    fault.append(o);
  }
  const intensity = el("input");
  intensity.type = "number";
  intensity.min = 0;
  intensity.max = 100;
  intensity.step = "any";
  intensity.name = "intensity";
  const intensityRow = field("Intensity (0-100)", intensity);
  fault.addEventListener("change", () => {
    intensityRow.hidden = fault.value === "healthy";
  });
  const extra = [field("Machine", machine), machines, field("From", start), field("To", end), field("Fault", fault),
                 intensityRow];
  let f = null;
  const submit = (body, token) => {
    const label = { machine: machine.value.trim(), start: utc(start.value), end: utc(end.value), fault: fault.value, ...body };
    if (!label.machine) return Promise.reject(new Error("Enter the machine."));
    if (!label.start || !label.end) return Promise.reject(new Error("Choose when the range starts and ends."));
    if (fault.value !== "healthy") {
      const v = Number(intensity.value);
      if (intensity.value === "" || !Number.isFinite(v) || v < 0 || v > 100) {
        return Promise.reject(new Error("The intensity is a number from 0 to 100."));
      }
      label.intensity = v;
    }
    return postLabel(label, token);
  };
  const done = (label) => {
    if (label) {
      f.msg.textContent = `Label ${label.id} stored: ${labelText(label)}.`;
      f.msg.classList.add("label-ok");
      f.note.value = "";
      recent(label.machine);
    } else {
      f.msg.textContent = "";
    }
  };
  f = labelForm(extra, submit, done);
  f.form.id = "label-range";
  box.replaceChildren(f.form);
  machine.addEventListener("change", () => recent(machine.value.trim()));
  getJSON("/api/machines").then((ans) => {
    machines.replaceChildren(...(ans.machines || []).map((m) => {
      const o = el("option");
      o.value = m.machine;
      return o;
    }));
    if (!machine.value && ans.machines && ans.machines.length) machine.value = ans.machines[0].machine;
    recent(machine.value.trim());
  }).catch(() => {});
}

async function recent(machine) {
  const list = $("labels-recent");
  try {
    const ans = await getJSON("/api/labels", { machine: machine || undefined, limit: 20 });
    list.replaceChildren(...(ans.labels || []).map((l) => {
      const li = el("li", null, `${l.machine} ${l.start} – ${l.end}: ${labelText(l)}`);
      li.dataset.id = l.id;
      return li;
    }));
  } catch (err) {
    list.replaceChildren(el("li", "muted", `Labels could not be loaded: ${errorText(err)}`));
  }
}
