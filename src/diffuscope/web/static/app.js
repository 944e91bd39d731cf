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
  if (!r.ok) { const e = new Error(data.error || `${r.status} ${r.statusText}`); e.status = r.status; throw e; }
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
// --- jobs: their state on the page (queued with its position, running, done, cancelled, error), kept in
// sessionStorage so that a reload reattaches to a job still running (its events replay from the first) ---
const JOBS_KEY = "diffuscope-jobs";
function savedJobs() {
  try { return JSON.parse(sessionStorage.getItem(JOBS_KEY)) || {}; } catch (e) { return {}; }
}
function keepJob(kind, value) {
  const jobs = savedJobs();
  if (value) jobs[kind] = value; else delete jobs[kind];
  sessionStorage.setItem(JOBS_KEY, JSON.stringify(jobs));
}
function showJobState(el, state, position) {
  const text = state === "queued" && position != null ? `queued (position ${position})` : state;
  el.textContent = text; el.dataset.state = state;
  el.classList.toggle("error", state === "error");
}
async function watch(job, el, onEvent) {
  // the stream is opened at once (a job nobody listens to is cancelled); until its first event the job may
  // wait in the queue behind another tab's: poll its state so the page says so instead of "running"
  let started = false;
  showJobState(el, "queued");
  const poll = async () => {
    while (!started) {
      try {
        const s = await api("GET", `/api/jobs/${job}`);
        if (started) break;
        if (s.state === "queued") showJobState(el, "queued", s.position);
        else if (s.state === "running") { showJobState(el, "running"); }
      } catch (e) { break; }
      await new Promise((r) => setTimeout(r, 700));
    }
  };
  poll();
  const end = await follow(job, (ev) => {
    if (!started && ev.type !== "done" && ev.type !== "error" && ev.type !== "cancelled") {
      started = true; showJobState(el, "running");
    }
    onEvent(ev);
  });
  started = true;
  if (end.type === "done" || end.type === "error" || end.type === "cancelled") showJobState(el, end.type);
  return end;
}
const model = () => MODELS.find((m) => m.name === $("model").value) || MODELS[0];
const fileUrl = (job, name) => `/api/files/${job}/${name}`;
// an image is hidden until it has loaded (no broken-image icon, no empty frame): see the load listener in start()
function setImg(el, src) { if (src && el.getAttribute("src") !== src) el.src = src; }
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
  setImg($("forward-image"), forward.closed[i]);
  setImg($("forward-chain"), forward.chain[i]);
  $("forward-t").setAttribute("aria-valuetext", forward.continuous
    ? `sigma ${Number(forward.sigma[i].toPrecision(3))}, stop ${forward.t[i]} of ${forward.T}` : `t ${forward.t[i]} of ${forward.T}`);
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
// the kept frames of the current generation (one per step event; previews where the server sent them)
let frames = [];
let followLive = true;
const BANDS = {
  early: "early: composition is being decided (where things go); x_t is still mostly noise",
  middle: "middle: structure (the shapes form; the class is usually fixed by now)",
  late: "late: detail (edges and texture; the picture barely moves)",
};
function bandOf(f) {
  if (f.band) return f.band;
  const third = f.n / 3;
  return f.k <= third ? "early" : f.k <= 2 * third ? "middle" : "late";
}
function showFrame(i) {
  const f = frames[i];
  if (!f) return;
  const band = bandOf(f);
  const sigma = f.sigma == null ? "" : `, sigma ${Number(f.sigma.toPrecision(2))}`;
  const sc = $("reverse-scrubber");
  sc.value = i + 1;
  sc.setAttribute("aria-valuetext", `step ${f.k} of ${f.n}${sigma}, ${band}: ${BANDS[band].split(" (")[0].split(": ")[1]}`);
  // the latest preview at or before this step
  for (let j = i; j >= 0; j--) { if (frames[j].xt) { setImg($("preview-xt"), frames[j].xt); break; } }
  for (let j = i; j >= 0; j--) { if (frames[j].x0) { setImg($("preview-x0"), frames[j].x0); break; } }
  $("preview-xt").alt = `x_t, the noisy state at step ${f.k} of ${f.n}${sigma}`;
  $("preview-x0").alt = `the network's prediction of the clean image at step ${f.k} of ${f.n}`;
  for (const li of document.querySelectorAll("#bands li")) li.classList.toggle("current", li.dataset.band === band);
  $("band-caption").textContent = `step ${f.k} of ${f.n}: ${BANDS[band]}`;
}
function addFrame(ev) {
  const kept = ev.frame || {};  // the server keeps a frame's PNGs on disk: its URLs stand in for a skipped preview
  frames.push({ k: ev.k, n: ev.n, sigma: ev.sigma, xt: ev.xt || kept.xt, x0: ev.x0 || kept.x0, band: ev.band || kept.band });
  const sc = $("reverse-scrubber");
  sc.max = frames.length; sc.disabled = false;
  if (followLive) showFrame(frames.length - 1);
}
function mergeKeptFrames(job, kept) {
  // the server's kept frames (URLs or data URLs, with their band) fill in the steps that had no preview
  if (!Array.isArray(kept)) return;
  for (const f of kept) {
    const k = typeof f === "object" && f ? f.k : null;
    const url = (u) => (u && !u.startsWith("data:") && !u.startsWith("/") ? fileUrl(job, u) : u);
    const mine = frames.find((x) => x.k === k);
    if (!mine) continue;
    mine.xt = mine.xt || url(f.xt || f.url); mine.x0 = mine.x0 || url(f.x0); mine.band = f.band || mine.band;
  }
}
function clearReverse(message) {
  // a refused or failed request must not leave the previous picture and "step 20 / 20" on screen
  frames = []; followLive = true;
  const sc = $("reverse-scrubber");
  sc.max = 1; sc.value = 1; sc.disabled = true; sc.setAttribute("aria-valuetext", "no steps yet");
  for (const id of ["preview-xt", "preview-x0", "final-image"]) { $(id).hidden = true; $(id).removeAttribute("src"); }
  $("final-save").hidden = true;
  $("step-counter").textContent = message || "step 0 / 0";
  $("step-sigma").textContent = ""; $("band-caption").textContent = "";
  for (const li of document.querySelectorAll("#bands li")) li.classList.remove("current");
}
function showPromptNote(note) {
  const el = $("prompt-note");
  el.textContent = note || ""; el.hidden = !note;
}
let promptTimer = null;
let promptCheckRoute = true;  // whether the server has GET /api/prompt-check
function checkPromptLater() { clearTimeout(promptTimer); promptTimer = setTimeout(checkPrompt, 300); }
async function checkPrompt() {
  const q = new URLSearchParams({ model: model().name, prompt: $("prompt").value });
  try {
    const r = await api("GET", "/api/prompt-check?" + q);
    showPromptNote(r.prompt_note || r.message || null);
  } catch (e) {
    // a server without the check (404): the exercise plan, which checks the prompt too, gives the note
    if (e.status === 404 || e.status === 405) promptCheckRoute = false;
    else showPromptNote(/prompt/i.test(e.message) ? e.message : null);
  }
}
async function generate() {
  const m = model();
  const body = {
    model: m.name, prompt: $("prompt").value, sampler: $("sampler").value, steps: Number($("steps").value),
    seed: Number($("seed").value), guidance: Number($("guidance").value), guidance_interval: intervalValue(),
    preview_every: Number($("preview-every").value),
    preview: model().cheap_preview ? $("preview-mode").value : "decode",
  };
  let r;
  try { r = await api("POST", "/api/generate", body); }
  catch (e) {
    status($("generate-status"), e.message, true);
    clearReverse("no image: the request was refused");
    showJobState($("job-state"), "error");
    if (/prompt/i.test(e.message)) showPromptNote(e.message);
    return;
  }
  if ("prompt_note" in r) showPromptNote(r.prompt_note);
  keepJob("generate", { job: r.job, steps: body.steps });
  await followGenerate(r.job, body.steps);
}
async function followGenerate(job, steps) {
  generateJob = job;
  clearReverse(`step 0 / ${steps}`);
  $("generate").disabled = true; $("cancel").disabled = false;
  status($("generate-status"), "");
  const end = await watch(job, $("job-state"), (ev) => {
    if (ev.type === "step") {
      $("step-counter").textContent = `step ${ev.k} / ${ev.n}`;
      $("step-sigma").textContent = `sigma ${ev.sigma.toPrecision(4)}`;
      addFrame(ev);
    }
  });
  generateJob = null;
  $("generate").disabled = false; $("cancel").disabled = true;
  if (end.type === "done") {
    mergeKeptFrames(job, end.frames);
    if (frames.length) showFrame(Number($("reverse-scrubber").value) - 1);
    setImg($("final-image"), end.image);
    const a = $("final-save");
    a.href = fileUrl(job, end.file); a.download = end.file; a.hidden = false;
    status($("generate-status"), `done: ${end.sampler}, ${end.nfe} network evaluations, seed ${end.seed}`);
    record("generate", { sampler: end.sampler, steps, seed: end.seed });
  } else {
    if (end.type === "end") { keepJob("generate", null); status($("generate-status"), "the job was lost", true); return; }
    keepJob("generate", null);
    status($("generate-status"), end.message || end.type, end.type === "error");
    if (end.type === "error") clearReverse("no image: " + (end.message || "error"));
  }
}

// --- 3. the exercise ---
const LESSON_STEPS = [10, 25, 50, 100];  // the lesson's columns, unless the server names them (`highlight`)
let highlight = LESSON_STEPS;
function yValues() {
  return $("exercise-y-values").value.split(",").map((v) => v.trim()).filter((v) => v);
}
function exerciseBody() {
  const samplers = [...document.querySelectorAll("#exercise-samplers input:checked")].map((el) => el.value);
  const axis = $("exercise-axis-y").value;
  const body = {
    model: model().name, prompt: $("prompt").value, samplers, steps: $("exercise-steps").value,
    seed: Number($("seed").value), guidance: Number($("guidance").value), n: Number($("exercise-n").value),
    axis_x: $("exercise-axis-x").value,
  };
  if (axis !== "sampler") Object.assign(body, { axis_y: axis, axis_y_values: yValues().join(",") });
  return body;
}
let planTimer = null;
function planLater() { clearTimeout(planTimer); planTimer = setTimeout(plan, 200); }
async function plan() {
  const b = exerciseBody();
  const q = new URLSearchParams({ model: b.model, prompt: b.prompt, samplers: b.samplers.join("|"), steps: b.steps,
    seed: b.seed, guidance: b.guidance, n: b.n });
  if (b.axis_y) { q.set("axis_y", b.axis_y); q.set("axis_y_values", b.axis_y_values); }
  try {
    const p = await api("GET", "/api/exercise/plan?" + q);
    if (Array.isArray(p.highlight)) highlight = p.highlight;
    status($("exercise-plan"), `before it starts: ${p.nfe} network evaluations (NFE) per image, ${p.n} images ` +
      `per cell = ${p.image_nfe} image-NFE in all, including the convergence reference (${p.reference}).`);
    $("exercise-run").disabled = exerciseJob !== null;
    if ("prompt_note" in p) showPromptNote(p.prompt_note);
    else if (!promptCheckRoute) showPromptNote(null);
    return p;
  } catch (e) {
    status($("exercise-plan"), e.message, true); $("exercise-run").disabled = true;
    if (/prompt/i.test(e.message)) showPromptNote(e.message);
  }
}
function axisChanged() {
  const axis = $("exercise-axis-y").value;
  $("exercise-y-box").hidden = axis === "sampler";
  $("exercise-samplers").hidden = axis !== "sampler";
  $("exercise-y-name").textContent = axis === "seed" ? "seeds" : axis === "guidance" ? "guidance values" : "spacings";
  const examples = { seed: "0,1,2", guidance: "1,1.5,2.5", spacing: "karras,uniform" };
  if (axis !== "sampler") $("exercise-y-values").placeholder = examples[axis];
  if (axis !== "sampler" && !$("exercise-y-values").value) $("exercise-y-values").value = examples[axis];
  planLater();
}
// the grid: one row per y value (samplers by default), one column per step count; each cell a button that opens
// its seeds large; cells[rowKey|steps] holds what the cell showed
let cells = {};
let grid = { rows: [], steps: [], total: 0, done: 0, job: null, axis: "sampler" };
function cellKey(row, steps) { return `${row}|${steps}`; }
function buildGrid(rows, steps, axis) {
  cells = {};
  grid = { rows, steps, total: rows.length * steps.length, done: 0, job: null, axis };
  const table = $("exercise-grid");
  const head = document.createElement("tr");
  const corner = document.createElement("th"); corner.textContent = `${axis} \\ steps`; head.append(corner);
  for (const s of steps) {
    const th = document.createElement("th"); th.scope = "col";
    const lesson = highlight.includes(s);
    th.textContent = `${lesson ? "\u2605 " : ""}${s} step${s === 1 ? "" : "s"}`;
    if (lesson) { th.classList.add("lesson"); th.title = "one of the lesson's step counts"; }
    head.append(th);
  }
  const trs = rows.map((row) => {
    const tr = document.createElement("tr");
    const th = document.createElement("th"); th.scope = "row"; th.textContent = axis === "sampler" ? row : `${axis} ${row}`;
    tr.append(th);
    for (const s of steps) {
      const td = document.createElement("td");
      td.dataset.row = row; td.dataset.sampler = row; td.dataset.steps = s;
      td.setAttribute("data-testid", "exercise-cell");
      td.className = "pending" + (highlight.includes(s) ? " lesson" : ""); td.textContent = "\u2026";
      tr.append(td);
    }
    return tr;
  });
  table.replaceChildren(head, ...trs);
  $("exercise-diff-toggle").checked = false; $("exercise-diff-toggle").disabled = true;
  $("exercise-diff-scale").textContent = "";
}
function imageUrl(job, v) { return !v ? null : v.startsWith("data:") || v.startsWith("/") ? v : fileUrl(job, v); }
function newImg(src, alt) {
  const img = document.createElement("img"); img.hidden = true; img.alt = alt; img.src = src; return img;
}
function cellLabel(c) { return `${grid.axis === "sampler" ? c.row : `${grid.axis} ${c.row}`}, ${c.steps} steps`; }
function renderCell(c) {
  const td = document.querySelector(`#exercise-grid td[data-row="${CSS.escape(String(c.row))}"][data-steps="${c.steps}"]`);
  if (!td) return;
  const diff = $("exercise-diff-toggle").checked;
  const button = document.createElement("button"); button.type = "button"; button.className = "cell-open";
  button.setAttribute("aria-label", `${cellLabel(c)}: open its ${c.seeds.length} seed${c.seeds.length > 1 ? "s" : ""} large`);
  const thumbs = document.createElement("span"); thumbs.className = "thumbs n" + Math.min(4, diff ? 1 : c.seeds.length);
  if (diff && c.diff) thumbs.append(newImg(c.diff, `difference of ${cellLabel(c)} to the reference (${c.diffScale || "amplified"})`));
  else for (const [i, src] of c.seeds.slice(0, 4).entries()) thumbs.append(newImg(src, `${cellLabel(c)}, seed ${c.seedNames[i]}`));
  button.append(thumbs);
  button.addEventListener("click", () => openCell(c));
  const cap = document.createElement("div"); cap.textContent = c.caption;
  td.replaceChildren(button, cap); td.classList.remove("pending"); td.classList.add("done");
  td.onclick = (e) => { if (e.target === td || e.target === cap) openCell(c); };
}
function openCell(c) {
  const dlg = $("cell-dialog");
  $("cell-dialog-title").textContent = cellLabel(c);
  const diff = $("exercise-diff-toggle").checked && c.diff;
  const figs = c.seeds.map((src, i) => {
    const fig = document.createElement("figure");
    const cap = document.createElement("figcaption"); cap.textContent = `seed ${c.seedNames[i]}`;
    fig.append(newImg(src, `${cellLabel(c)}, seed ${c.seedNames[i]}, enlarged`), cap); return fig;
  });
  if (c.diff) {
    const fig = document.createElement("figure");
    const cap = document.createElement("figcaption"); cap.textContent = `difference to the reference (${c.diffScale || "amplified"})`;
    fig.append(newImg(c.diff, `difference of ${cellLabel(c)} to the reference, enlarged`), cap);
    if (diff) figs.unshift(fig); else figs.push(fig);
  }
  $("cell-dialog-images").replaceChildren(...figs);
  const save = c.file ? ` Saved as ${c.file}.` : "";
  $("cell-dialog-text").textContent = c.caption + "." + save;
  if (dlg.showModal) dlg.showModal(); else dlg.setAttribute("open", "");
}
async function diffAgainst(src, refSrc) {
  // without the server's diff image: |x - x_ref| x 4 against the row's most-steps cell, drawn on a canvas
  const load = (u) => new Promise((res, rej) => { const i = new Image(); i.onload = () => res(i); i.onerror = rej; i.src = u; });
  const [a, b] = await Promise.all([load(src), load(refSrc)]);
  const c = document.createElement("canvas"); c.width = a.naturalWidth; c.height = a.naturalHeight;
  const ctx = c.getContext("2d");
  ctx.drawImage(b, 0, 0); const rb = ctx.getImageData(0, 0, c.width, c.height);
  ctx.drawImage(a, 0, 0); const ra = ctx.getImageData(0, 0, c.width, c.height);
  for (let i = 0; i < ra.data.length; i += 4) {
    for (let j = 0; j < 3; j++) ra.data[i + j] = Math.min(255, 4 * Math.abs(ra.data[i + j] - rb.data[i + j]));
    ra.data[i + 3] = 255;
  }
  ctx.putImageData(ra, 0, 0);
  return c.toDataURL("image/png");
}
async function fillClientDiffs() {
  for (const row of grid.rows) {
    const done = grid.steps.map((s) => cells[cellKey(row, s)]).filter((c) => c);
    const ref = done[done.length - 1];
    if (!ref) continue;
    for (const c of done) {
      if (c.diff) continue;
      try { c.diff = await diffAgainst(c.seeds[0], ref.seeds[0]); } catch (e) { continue; }
      c.diffScale = `|x - x(${ref.steps} steps)| x 4: black = the same, white = a quarter of the range or more`;
    }
  }
}
async function toggleDiff() {
  const on = $("exercise-diff-toggle").checked;
  if (on && Object.values(cells).some((c) => !c.diff)) await fillClientDiffs();
  const scales = [...new Set(Object.values(cells).map((c) => c.diffScale).filter((v) => v))];
  $("exercise-diff-scale").textContent = on ? "difference to the reference, " + (scales.join("; ") || "amplified") : "";
  for (const c of Object.values(cells)) renderCell(c);
}
function onCell(job, ev) {
  const row = ev.y ?? ev.row ?? ev.sampler;
  const seeds = (Array.isArray(ev.seed_images) && ev.seed_images.length ? ev.seed_images : [ev.image])
    .map((v) => imageUrl(job, typeof v === "object" && v ? v.image || v.url : v)).filter((v) => v);
  const seedNames = (Array.isArray(ev.seed_images) ? ev.seed_images : [ev.image]).map((v, i) =>
    (typeof v === "object" && v && v.seed != null ? v.seed : ev.seeds ? ev.seeds[i] : `#${i + 1}`));
  const m = ev.metrics || {};
  const caption = `${ev.nfe} NFE` + (m.fd != null ? `, FD ${m.fd.toFixed(2)}` : "") +
    (m.conv_pixel != null ? `, RMSE ${m.conv_pixel.toFixed(3)}` : "");
  const c = { row: String(row), steps: ev.steps, seeds, seedNames, caption, file: ev.file,
    diff: imageUrl(job, ev.diff_image), diffScale: ev.diff_scale };
  cells[cellKey(c.row, c.steps)] = c;
  renderCell(c);
  grid.done += 1;
  $("exercise-diff-toggle").disabled = false;
  progressText(ev);
}
function progressText(ev) {
  // the server counts the convergence reference as one more run (done / total); else count the cells
  const text = ev && ev.total != null
    ? `${ev.done} of ${ev.total} runs done (the convergence reference and ${grid.total} cells)`
    : `${grid.done} of ${grid.total} cell${grid.total === 1 ? "" : "s"} done`;
  status($("exercise-plan"), text);
}
function answerRows(end, cancelled) {
  // one row per sampler (or y value): {headline, detail, state}; a plain sentence from an older server is split
  // at its first ";" (the headline) and the statistics after it (the detail)
  const rows = [];
  const source = end.results || end.answers || {};
  for (const [name, v] of Object.entries(source)) {
    if (v && typeof v === "object") { rows.push({ name, headline: v.headline || v.answer || "", detail: v.detail || "", state: v.state }); continue; }
    const text = String(v);
    const cut = text.indexOf("; ");
    rows.push(cut > 0 ? { name, headline: text.slice(0, cut) + ".", detail: text.slice(cut + 2) } : { name, headline: text, detail: "" });
  }
  if (!rows.length && cancelled) {
    for (const name of grid.rows) rows.push({ name, headline: "", detail: "", state: "cancelled" });
  }
  return rows;
}
function showAnswers(rows, cancelled) {
  const partial = `cancelled after ${grid.done} of ${grid.total} cells`;
  $("exercise-answer").replaceChildren(...rows.map((r) => {
    const box = document.createElement("div"); box.className = "answer-row";
    const stale = cancelled || r.state === "cancelled";
    box.classList.toggle("partial", stale);
    const h = document.createElement("p"); h.setAttribute("data-testid", "answer-headline"); h.className = "headline";
    const name = grid.axis === "sampler" ? r.name : `${grid.axis} ${r.name}`;
    const named = (text) => (text.startsWith(`${name}:`) || text.startsWith(`${r.name}:`) ||
      text.includes(`(${r.name})`) ? text : `${name}: ${text}`);
    h.textContent = stale
      ? named(/cancelled/.test(r.headline) ? r.headline : partial) + " (not an answer: the exercise did not finish)"
      : named(r.headline);
    box.append(h);
    if (r.detail && !stale) { const d = document.createElement("p"); d.className = "detail"; d.textContent = r.detail; box.append(d); }
    return box;
  }));
}
async function runExercise() {
  const p = await plan();
  if (!p) return;
  const body = exerciseBody();
  let r;
  try { r = await api("POST", "/api/exercise", body); }
  catch (e) {
    // a refused run: the grid and answer on screen are the previous run's, and marked so
    status($("exercise-plan"), e.message, true);
    for (const id of ["exercise-grid", "exercise-answer"]) $(id).classList.add("stale");
    return;
  }
  for (const id of ["exercise-grid", "exercise-answer"]) $(id).classList.remove("stale");
  if ("prompt_note" in r) showPromptNote(r.prompt_note);
  // the rows: the server's labels for y values (the plan's `rows`, e.g. guidance 1.50 -> 1.5), else the samplers
  const rows = body.axis_y ? (Array.isArray(p.rows) && p.rows.length ? p.rows.map(String) : yValues())
    : body.samplers.map((s) => (model().samplers.find((x) => x.name === s || x.id === s) || { name: s }).name);
  keepJob("exercise", { job: r.job, rows, steps: p.steps, axis: body.axis_y || "sampler" });
  await followExercise(r.job, rows, p.steps, body.axis_y || "sampler");
}
async function followExercise(job, rows, steps, axis) {
  exerciseJob = job;
  $("exercise-run").disabled = true; $("exercise-cancel").disabled = false;
  $("exercise-answer").replaceChildren(); $("exercise-plot").hidden = true;
  buildGrid(rows, steps, axis);
  grid.job = job;
  const end = await watch(job, $("exercise-job-state"), (ev) => {
    if (ev.type === "plan" && ev.cells) grid.total = ev.cells;
    if (ev.type === "reference") progressText(ev);
    if (ev.type === "cell") onCell(job, ev);
  });
  exerciseJob = null;
  $("exercise-run").disabled = false; $("exercise-cancel").disabled = true;
  if (end.type === "cancelled") {
    keepJob("exercise", null);
    status($("exercise-plan"), end.headline || `cancelled after ${grid.done} of ${grid.total} cells`);
    showAnswers(answerRows(end, true), true);
    return;
  }
  if (end.type !== "done") { keepJob("exercise", null); status($("exercise-plan"), end.message || end.type, end.type === "error"); return; }
  const rowsOut = answerRows(end, false);
  showAnswers(rowsOut, false);
  if (end.plot) setImg($("exercise-plot"), fileUrl(job, end.plot));
  // one quality plot per row sweep when the rows are y values: the first above, the others after it
  for (const el of document.querySelectorAll("#exercise .more-plot")) el.remove();
  let prev = $("exercise-plot");
  for (const [i, name] of (end.plots || []).slice(1).entries()) {
    const img = newImg(fileUrl(job, name), `plot: image quality against network evaluations, ${grid.axis} ${grid.rows[i + 1] ?? ""}`);
    img.className = "more-plot"; prev.after(img); prev = img;
  }
  $("exercise-notes").replaceChildren(...(end.notes || []).map((t) => { const li = document.createElement("li"); li.textContent = t; return li; }));
  record("exercise", { answers: [...document.querySelectorAll("#exercise-answer [data-testid=answer-headline]")].map((h) => h.textContent) });
}

// --- 4. what gets decided when ---
async function runPhases() {
  const body = { model: model().name, prompt: $("prompt").value, steps: Number($("phases-steps").value),
    n: Number($("phases-n").value), seed: Number($("seed").value) };
  let job;
  try { job = (await api("POST", "/api/phases", body)).job; }
  catch (e) { status($("phases-status"), e.message, true); showJobState($("phases-job-state"), "error"); return; }
  keepJob("phases", { job });
  await followPhases(job);
}
async function followPhases(job) {
  $("phases-run").disabled = true; status($("phases-status"), "measuring\u2026");
  const end = await watch(job, $("phases-job-state"), () => {});
  $("phases-run").disabled = false;
  if (end.type !== "done") {
    keepJob("phases", null);
    status($("phases-status"), end.type === "end" ? "the job was lost" : end.message || end.type,
      end.type === "error" || end.type === "end");
    return;
  }
  status($("phases-status"), "");
  const head = document.createElement("tr");
  for (const t of ["the lesson says", "measured on this model", "verdict"]) {
    const th = document.createElement("th"); th.scope = "col"; th.textContent = t; head.append(th);
  }
  // a verdict is [claim, measured, verdict] or {claim, measured, verdict, why}; each gets its why
  const verdicts = end.verdicts.map((v) => (Array.isArray(v) ? { claim: v[0], measured: v[1], verdict: v[2], why: v[3] } : v));
  $("phases-verdicts").replaceChildren(head, ...verdicts.map((v) => {
    const tr = document.createElement("tr");
    for (const text of [v.claim, v.measured]) { const td = document.createElement("td"); td.textContent = text; tr.append(td); }
    const td = document.createElement("td");
    const strong = document.createElement("strong"); strong.textContent = v.verdict;
    const why = document.createElement("div"); why.className = "why"; why.setAttribute("data-testid", "verdict-why");
    why.textContent = "why: " + (v.why || `${v.verdict === "holds" ? "it holds" : "it was not seen"} because the measurement ` +
      `on this model reads "${v.measured}"`);
    td.append(strong, why); tr.append(td);
    return tr;
  }));
  const plotAlt = (name) => (/freq/.test(name) ? "plot: how much of each step's change is coarse and how much fine, step by step"
    : /commit/.test(name) ? "plot: the commitment curve, how often fresh noise from each step keeps the class"
      : /consist/.test(name) ? "plot: how consistent the finishes are from each step"
        : "plot: " + name.replace(/\.png$/, "").replace(/[_-]/g, " "));
  $("phases-plots").replaceChildren(...end.plots.map((name) => newImg(fileUrl(job, name), plotAlt(name))));
  record("phases", { verdicts: verdicts.map((v) => `${v.claim}: ${v.verdict}`) });
}

// --- 4b. any image is reachable from noise ---
async function runInvert() {
  const body = { model: model().name, index: Number($("invert-index").value || 0), prompt: $("invert-prompt").value,
    regen_prompt: $("invert-regen-prompt").value, steps: Number($("invert-steps").value),
    sampler: $("sampler").value };
  let job;
  try { job = (await api("POST", "/api/invert", body)).job; }
  catch (e) { status($("invert-status"), e.message, true); showJobState($("invert-job-state"), "error"); return; }
  keepJob("invert", { job, index: body.index, steps: body.steps });
  await followInvert(job, body.index, body.steps);
}
async function followInvert(job, index, steps) {
  $("invert-run").disabled = true;
  status($("invert-status"), `inverting: ${steps} steps up, ${steps} back down\u2026`);
  const end = await watch(job, $("invert-job-state"), () => {});
  $("invert-run").disabled = false;
  if (end.type !== "done") {
    keepJob("invert", null);
    status($("invert-status"), end.type === "end" ? "the job was lost" : end.message || end.type,
      end.type === "error" || end.type === "end");
    return;
  }
  status($("invert-status"), `image ${index} (${end.label}); saved in the job folder with invert.json`);
  setImg($("invert-original"), fileUrl(job, end.files.original));
  setImg($("invert-noise"), fileUrl(job, end.files.noise));
  setImg($("invert-regenerated"), fileUrl(job, end.files.regenerated));
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
      : m.class_names.length ? `prompts ${m.class_names.join(", ")}` : "no prompts") +
    (m.student ? `; ${m.student.about}` : "");
  $("prompt-list").replaceChildren(...m.class_names.map((c) => { const o = document.createElement("option"); o.value = c; return o; }));
  $("prompt").value = m.default_prompt;
  $("sampler").replaceChildren(...m.samplers.map((s) => {
    const o = document.createElement("option"); o.value = s.name; o.textContent = s.name;
    o.selected = s.name === m.default_sampler; return o;
  }));
  $("exercise-samplers").replaceChildren(...m.samplers.map((s) => {
    const label = document.createElement("label");
    const box = document.createElement("input"); box.type = "checkbox"; box.value = s.name;
    box.checked = m.exercise_samplers.includes(s.name);
    box.addEventListener("change", planLater);
    label.append(box, " " + s.name); return label;
  }));
  // the model's own defaults (a distilled student: its K steps, Euler, guidance 1), from /api/models
  $("guidance").value = m.default_guidance;
  $("steps").value = m.default_steps;
  $("phases-steps").value = m.phases_steps;
  $("invert-steps").value = m.invert_steps;
  $("exercise-steps").value = m.exercise_steps.join(",");
  for (const id of ["steps", "phases-steps", "invert-steps"]) $(id).max = m.max_steps;
  $("preview-mode-box").hidden = !m.cheap_preview;
  loadForward();
  plan();
  checkPromptLater();
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
  $("exercise-axis-y").addEventListener("change", axisChanged);
  $("exercise-y-values").addEventListener("input", planLater);
  $("exercise-diff-toggle").addEventListener("change", toggleDiff);
  $("reverse-scrubber").addEventListener("input", () => {
    const sc = $("reverse-scrubber");
    followLive = Number(sc.value) >= frames.length;
    showFrame(Number(sc.value) - 1);
  });
  $("prompt").addEventListener("input", checkPromptLater);
  $("prompt").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.isComposing && !$("generate").disabled) { e.preventDefault(); generate(); }
  });
  $("exercise-cancel").addEventListener("click", () => exerciseJob && api("POST", `/api/jobs/${exerciseJob}/cancel`));
  for (const id of ["exercise-steps", "exercise-n", "prompt", "seed", "guidance"]) $(id).addEventListener("input", planLater);
  $("phases-run").addEventListener("click", runPhases);
  $("invert-run").addEventListener("click", runInvert);
  $("progress-clear").addEventListener("click", () => { localStorage.removeItem(PROGRESS_KEY); showProgress(); });
  showProgress();
  fillModel();
  reattach();
}
async function reattach() {
  // a reload mid-job: the job id was kept in sessionStorage; its events replay from the first
  const jobs = savedJobs();
  for (const [kind, saved] of Object.entries(jobs)) {
    try { await api("GET", `/api/jobs/${saved.job}`); } catch (e) { keepJob(kind, null); continue; }
    if (kind === "generate") followGenerate(saved.job, saved.steps);
    if (kind === "exercise") followExercise(saved.job, saved.rows, saved.steps, saved.axis);
    if (kind === "phases") followPhases(saved.job);
    if (kind === "invert") followInvert(saved.job, saved.index, saved.steps);
  }
}
// images: shown once loaded, hidden again if a load fails (load and error do not bubble: capture them)
document.addEventListener("load", (e) => { if (e.target.tagName === "IMG") e.target.hidden = false; }, true);
document.addEventListener("error", (e) => { if (e.target.tagName === "IMG") e.target.hidden = true; }, true);
start();
