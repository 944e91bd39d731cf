// diffuscope serve: the page. Plain JS, no dependencies, no network beyond this server.
"use strict";
const TOKEN = document.querySelector('meta[name="diffuscope-token"]').content;
const $ = (id) => document.getElementById(id);
const PROGRESS_KEY = "diffuscope-progress";
let MODELS = [];
let forward = null;   // frames of the forward process for the chosen image
let generateJob = null;
let exerciseJob = null;

// --- local progress: which sections the learner has run, and their answers (localStorage; nothing leaves) ---
function progress() {
  try { return JSON.parse(localStorage.getItem(PROGRESS_KEY)) || {}; } catch (e) { return {}; }
}
function record(key, value) {
  const p = progress();
  p[key] = Object.assign({ at: new Date().toISOString() }, value);
  localStorage.setItem(PROGRESS_KEY, JSON.stringify(p));
  showProgress();
}
function showProgress() {
  const p = progress();
  const items = [
    ["forward", "1. dragged the forward process",
      (v) => (v.sigma !== undefined ? `up to sigma = ${v.sigma}` : `up to t = ${v.t}`)],
    ["generate", "2. watched an image form", (v) => `${v.sampler}, ${v.steps} steps, seed ${v.seed}`],
    ["exercise", "3. ran the exercise", (v) => (v.answers || []).join(" ")],
    ["phases", "4. measured what gets decided when", (v) => (v.verdicts || []).join("; ")],
    ["invert", "4. inverted a real image to its noise and back", (v) => v.answer],
  ];
  const ul = $("progress");
  ul.replaceChildren(...items.map(([key, label, detail]) => {
    const li = document.createElement("li");
    li.textContent = (p[key] ? "\u2713 " : "\u2610 ") + label + (p[key] ? ": " + detail(p[key]) : "");
    return li;
  }));
}

// --- talking to the server ---
async function api(method, url, body) {
  const r = await fetch(url, {
    method,
    headers: { "Content-Type": "application/json", "X-Diffuscope-Token": TOKEN },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(data.error || `${r.status} ${r.statusText}`);
  return data;
}
function follow(job, onEvent) {
  // server-sent events: EventSource reconnects by itself and resumes after the last event id it saw
  return new Promise((resolve) => {
    const es = new EventSource(`/api/jobs/${job}/events`);
    es.onmessage = (e) => {
      const ev = JSON.parse(e.data);
      onEvent(ev);
      if (ev.type === "done" || ev.type === "error" || ev.type === "cancelled") { es.close(); resolve(ev); }
    };
    es.addEventListener("end", () => { es.close(); resolve({ type: "end" }); });
  });
}
const model = () => MODELS.find((m) => m.name === $("model").value) || MODELS[0];
const fileUrl = (job, name) => `/api/files/${job}/${name}`;
function status(el, text, isError) { el.textContent = text; el.classList.toggle("error", !!isError); }

// --- 1. forward process ---
async function loadForward() {
  const m = model();
  const q = new URLSearchParams({ model: m.name, index: $("forward-index").value || 0, seed: $("forward-seed").value || 0 });
  try {
    forward = await api("GET", "/api/forward?" + q);
  } catch (e) { status($("forward-numbers"), e.message, true); return; }
  const t = $("forward-t");
  t.max = forward.T; t.step = forward.continuous ? 1 : forward.t[1] - forward.t[0];
  $("forward-t-name").textContent = forward.continuous ? "sigma (log scale)" : "t";
  $("forward-formula").innerHTML = forward.continuous ? CONTINUOUS_FORMULA : DISCRETE_FORMULA;
  $("forward-index").max = forward.count - 1;
  $("invert-index").max = forward.count - 1;
  showForward();
}
const DISCRETE_FORMULA = $("forward-formula").innerHTML;
const CONTINUOUS_FORMULA = "This model is continuous: no T, only the noise level sigma. Drag sigma (log-spaced " +
  "from sigma_min to sigma_max). Left: the closed form x = x<sub>0</sub> + sigma eps; right: the step-by-step chain " +
  "x<sub>k</sub> = x<sub>k-1</sub> + sqrt(sigma<sub>k</sub><sup>2</sup> - sigma<sub>k-1</sub><sup>2</sup>) " +
  "eps<sub>k</sub>, same seed. Both are shown scaled by 1 / sqrt(1 + sigma<sup>2</sup>), the discrete process's " +
  "sqrt(alpha_bar) for the same noise level.";
function showForward() {
  if (!forward) return;
  const t = Number($("forward-t").value);
  let i = forward.t.findIndex((v) => v >= t);
  if (i < 0) i = forward.t.length - 1;
  $("forward-image").src = forward.closed[i];
  $("forward-chain").src = forward.chain[i];
  const snr = forward.snr_db[i] === null ? "inf" : forward.snr_db[i].toFixed(1);
  const where = forward.continuous
    ? `sigma = ${Number(forward.sigma[i].toPrecision(4))} (stop ${forward.t[i]} of ${forward.T}, ${forward.schedule} range ` +
      `${Number(forward.sigma[1].toPrecision(3))}..${Number(forward.sigma[forward.T].toPrecision(3))})`
    : `t = ${forward.t[i]} of ${forward.T} (${forward.schedule} schedule)`;
  status($("forward-numbers"), `${where}: ` +
    `sqrt(alpha_bar) = ${forward.sqrt_alpha_bar[i].toFixed(4)}, SNR = ${snr} dB; ${forward.source}, class ` +
    `${forward.label}${forward.note ? "; " + forward.note : ""}`);
  const p = progress().forward;
  const reached = forward.continuous ? { t: forward.t[i], sigma: Number(forward.sigma[i].toPrecision(3)) }
    : { t: forward.t[i] };
  if (!p || forward.t[i] > p.t) record("forward", reached);
}

// --- 2. reverse process, live ---
function intervalValue() {
  const text = $("guidance-interval").value.trim();
  if (!text) return null;
  return text.split(",").map(Number);
}
async function generate() {
  const m = model();
  const body = {
    model: m.name, prompt: $("prompt").value, sampler: $("sampler").value, steps: Number($("steps").value),
    seed: Number($("seed").value), guidance: Number($("guidance").value), guidance_interval: intervalValue(),
    preview_every: Number($("preview-every").value),
    preview: model().cheap_preview ? $("preview-mode").value : "decode",
  };
  let job;
  try { job = (await api("POST", "/api/generate", body)).job; }
  catch (e) { status($("generate-status"), e.message, true); return; }
  generateJob = job;
  $("generate").disabled = true; $("cancel").disabled = false; $("final-save").hidden = true;
  status($("step-counter"), `step 0 / ${body.steps}`);
  status($("generate-status"), "running");
  const end = await follow(job, (ev) => {
    if (ev.type === "step") {
      $("step-counter").textContent = `step ${ev.k} / ${ev.n}`;
      $("step-sigma").textContent = `sigma ${ev.sigma.toPrecision(4)}`;
      if (ev.xt) $("preview-xt").src = ev.xt;
      if (ev.x0) $("preview-x0").src = ev.x0;
    }
  });
  $("generate").disabled = false; $("cancel").disabled = true;
  if (end.type === "done") {
    $("final-image").src = end.image;
    const a = $("final-save");
    a.href = fileUrl(job, end.file); a.download = end.file; a.hidden = false;
    status($("generate-status"), `done: ${end.sampler}, ${end.nfe} network evaluations, seed ${end.seed}`);
    record("generate", { sampler: end.sampler, steps: body.steps, seed: end.seed });
  } else {
    status($("generate-status"), end.message || end.type, end.type === "error");
  }
}

// --- 3. the exercise ---
function exerciseBody() {
  const samplers = [...document.querySelectorAll("#exercise-samplers input:checked")].map((el) => el.value);
  return {
    model: model().name, prompt: $("prompt").value, samplers, steps: $("exercise-steps").value,
    seed: Number($("seed").value), guidance: Number($("guidance").value), n: Number($("exercise-n").value),
  };
}
let planTimer = null;
function planLater() { clearTimeout(planTimer); planTimer = setTimeout(plan, 200); }
async function plan() {
  const b = exerciseBody();
  const q = new URLSearchParams({ model: b.model, prompt: b.prompt, samplers: b.samplers.join("|"), steps: b.steps,
    seed: b.seed, guidance: b.guidance, n: b.n });
  try {
    const p = await api("GET", "/api/exercise/plan?" + q);
    status($("exercise-plan"), `before it starts: ${p.nfe} network evaluations (NFE) per image, ${p.n} images ` +
      `per cell = ${p.image_nfe} image-NFE in all, including the convergence reference (${p.reference}).`);
    $("exercise-run").disabled = exerciseJob !== null;
    return p;
  } catch (e) { status($("exercise-plan"), e.message, true); $("exercise-run").disabled = true; }
}
function buildGrid(samplers, steps) {
  const grid = $("exercise-grid");
  const head = document.createElement("tr");
  head.append(document.createElement("th"));
  for (const s of steps) { const th = document.createElement("th"); th.textContent = `${s} steps`; head.append(th); }
  const rows = samplers.map((name) => {
    const tr = document.createElement("tr");
    const th = document.createElement("th"); th.textContent = name; tr.append(th);
    for (const s of steps) {
      const td = document.createElement("td");
      td.dataset.sampler = name; td.dataset.steps = s; td.className = "pending"; td.textContent = "\u2026";
      tr.append(td);
    }
    return tr;
  });
  grid.replaceChildren(head, ...rows);
}
async function runExercise() {
  const p = await plan();
  if (!p) return;
  const body = exerciseBody();
  let job;
  try { job = (await api("POST", "/api/exercise", body)).job; }
  catch (e) { status($("exercise-plan"), e.message, true); return; }
  exerciseJob = job;
  $("exercise-run").disabled = true; $("exercise-cancel").disabled = false;
  $("exercise-answer").replaceChildren(); $("exercise-plot").hidden = true;
  const names = body.samplers.map((s) => (model().samplers.find((x) => x.name === s || x.id === s) || { name: s }).name);
  buildGrid(names, p.steps);
  let done = 0;
  const end = await follow(job, (ev) => {
    if (ev.type !== "cell") return;
    const td = document.querySelector(`#exercise-grid td[data-sampler="${ev.sampler}"][data-steps="${ev.steps}"]`);
    if (!td) return;
    const img = document.createElement("img"); img.src = ev.image; img.alt = `${ev.sampler} ${ev.steps} steps`;
    const a = document.createElement("a"); a.href = fileUrl(job, ev.file); a.download = ev.file; a.append(img);
    const cap = document.createElement("div");
    const m = ev.metrics;
    cap.textContent = `${ev.nfe} NFE` + (m.fd != null ? `, FD ${m.fd.toFixed(2)}` : "") +
      (m.conv_pixel != null ? `, RMSE ${m.conv_pixel.toFixed(3)}` : "");
    td.replaceChildren(a, cap); td.className = "done";
    status($("exercise-plan"), `${++done} cells done`);
  });
  exerciseJob = null;
  $("exercise-run").disabled = false; $("exercise-cancel").disabled = true;
  if (end.type !== "done") { status($("exercise-plan"), end.message || end.type, end.type === "error"); return; }
  const answers = Object.values(end.answers);
  $("exercise-answer").replaceChildren(...answers.map((text) => {
    const para = document.createElement("p"); para.textContent = text; return para;
  }));
  if (end.plot) { $("exercise-plot").src = fileUrl(job, end.plot); $("exercise-plot").hidden = false; }
  $("exercise-notes").replaceChildren(...end.notes.map((t) => { const li = document.createElement("li"); li.textContent = t; return li; }));
  record("exercise", { answers });
}

// --- 4. what gets decided when ---
async function runPhases() {
  const body = { model: model().name, prompt: $("prompt").value, steps: Number($("phases-steps").value),
    n: Number($("phases-n").value), seed: Number($("seed").value) };
  let job;
  try { job = (await api("POST", "/api/phases", body)).job; }
  catch (e) { status($("phases-status"), e.message, true); return; }
  $("phases-run").disabled = true; status($("phases-status"), "measuring\u2026");
  const end = await follow(job, () => {});
  $("phases-run").disabled = false;
  if (end.type !== "done") { status($("phases-status"), end.message || end.type, end.type === "error"); return; }
  status($("phases-status"), "");
  const head = document.createElement("tr");
  for (const t of ["the lesson says", "measured on this model", "verdict"]) {
    const th = document.createElement("th"); th.textContent = t; head.append(th);
  }
  $("phases-verdicts").replaceChildren(head, ...end.verdicts.map((row) => {
    const tr = document.createElement("tr");
    for (const cell of row) { const td = document.createElement("td"); td.textContent = cell; tr.append(td); }
    return tr;
  }));
  $("phases-plots").replaceChildren(...end.plots.map((name) => {
    const img = document.createElement("img"); img.src = fileUrl(job, name); img.alt = name; return img;
  }));
  record("phases", { verdicts: end.verdicts.map((r) => `${r[0]}: ${r[2]}`) });
}

// --- 4b. any image is reachable from noise ---
async function runInvert() {
  const body = { model: model().name, index: Number($("invert-index").value || 0), prompt: $("invert-prompt").value,
    regen_prompt: $("invert-regen-prompt").value, steps: Number($("invert-steps").value),
    sampler: $("sampler").value };
  let job;
  try { job = (await api("POST", "/api/invert", body)).job; }
  catch (e) { status($("invert-status"), e.message, true); return; }
  $("invert-run").disabled = true;
  status($("invert-status"), `inverting: ${body.steps} steps up, ${body.steps} back down\u2026`);
  const end = await follow(job, () => {});
  $("invert-run").disabled = false;
  if (end.type !== "done") { status($("invert-status"), end.message || end.type, end.type === "error"); return; }
  status($("invert-status"), `image ${body.index} (${end.label}); saved in the job folder with invert.json`);
  $("invert-original").src = fileUrl(job, end.files.original);
  $("invert-noise").src = fileUrl(job, end.files.noise);
  $("invert-regenerated").src = fileUrl(job, end.files.regenerated);
  const para = document.createElement("p"); para.textContent = end.answer;
  $("invert-answer").replaceChildren(para);
  record("invert", { answer: end.answer });
}

// --- set-up ---
function fillModel() {
  const m = model();
  $("model-info").textContent = `${m.shape.join("x")}, ${m.schedule} schedule, ` +
    (m.conditioning === "text" ? `any text prompt (${m.class_names.length} trained names suggested, e.g. ` +
      `${m.class_names.slice(0, 3).join(", ")})` + (m.latent ? ", latent" : "")
      : m.class_names.length ? `prompts ${m.class_names.join(", ")}` : "no prompts");
  $("prompt-list").replaceChildren(...m.class_names.map((c) => { const o = document.createElement("option"); o.value = c; return o; }));
  $("prompt").value = m.default_prompt;
  $("sampler").replaceChildren(...m.samplers.map((s) => {
    const o = document.createElement("option"); o.value = s.name; o.textContent = s.name;
    o.selected = s.name === m.default_sampler; return o;
  }));
  $("exercise-samplers").replaceChildren(...m.samplers.map((s) => {
    const label = document.createElement("label");
    const box = document.createElement("input"); box.type = "checkbox"; box.value = s.name;
    box.checked = s.name === "DDIM" || s.name === m.default_sampler;
    box.addEventListener("change", planLater);
    label.append(box, " " + s.name); return label;
  }));
  $("guidance").value = m.default_guidance;
  for (const id of ["steps", "phases-steps", "invert-steps"]) $(id).max = m.max_steps;
  $("preview-mode-box").hidden = !m.cheap_preview;
  loadForward();
  plan();
}
async function start() {
  // the limits and defaults are the server's (one source of truth): nothing here repeats them
  const info = await api("GET", "/api/info");
  $("steps").value = info.defaults.steps;
  for (const id of ["seed", "forward-seed"]) $(id).max = info.limits.max_seed;
  for (const id of ["exercise-n", "phases-n"]) $(id).max = info.limits.max_exercise_n;
  $("guidance").max = info.limits.max_guidance;
  $("prompt").maxLength = info.limits.max_prompt_chars;
  MODELS = await api("GET", "/api/models");
  $("model").replaceChildren(...MODELS.map((m) => { const o = document.createElement("option"); o.value = m.name; o.textContent = m.name; return o; }));
  $("model").addEventListener("change", fillModel);
  $("forward-t").addEventListener("input", showForward);
  $("forward-index").addEventListener("change", loadForward);
  $("forward-seed").addEventListener("change", loadForward);
  $("generate").addEventListener("click", generate);
  $("cancel").addEventListener("click", () => generateJob && api("POST", `/api/jobs/${generateJob}/cancel`));
  $("exercise-run").addEventListener("click", runExercise);
  $("exercise-cancel").addEventListener("click", () => exerciseJob && api("POST", `/api/jobs/${exerciseJob}/cancel`));
  for (const id of ["exercise-steps", "exercise-n", "prompt", "seed", "guidance"]) $(id).addEventListener("input", planLater);
  $("phases-run").addEventListener("click", runPhases);
  $("invert-run").addEventListener("click", runInvert);
  $("progress-clear").addEventListener("click", () => { localStorage.removeItem(PROGRESS_KEY); showProgress(); });
  showProgress();
  fillModel();
}
start();
