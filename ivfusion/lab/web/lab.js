// The Intervention Lab's in-browser Fuse (ivfusion/lab/browser.py serves this file).
//
// The page loads the Lab's exported ISFuse graph once with onnxruntime-web (WebGPU where the
// browser has a GPU adapter, WebAssembly otherwise) and runs Fuse here: the server only sends
// the keep masks of the settings and seed (the same sampler as its own Fuse) and never runs a
// forward pass for it. Decoding, colour conversion (OpenCV's float YCrCb, as ivfusion.io),
// the colour maps (the server's look-up tables) and the live mode run in the page. The server's
// Fuse stays: when the model cannot load, when the server says a pair needs it, or by choice.
// No framework, no bundler: plain DOM, one global, `window.ivfusionLab`.
(() => {
  "use strict";
  const L = (window.ivfusionLab = {
    cfg: null, session: null, backend: null, state: "starting", why: "",
    pair: null, clean: null, last: null, live: { on: false, busy: false, pending: null, frames: [], fps: 0, count: 0 },
  });
  const $ = (id) => document.getElementById(id);
  const LEVELS = ["coarse", "mid", "fine"];
  const OUTPUTS = ["fused", "gate_coarse", "gate_mid", "gate_fine"];

  // ------------------------------------------------------------------ set-up
  function loadScript(src) {
    return new Promise((resolve, reject) => {
      const s = document.createElement("script");
      s.src = src;
      s.onload = resolve;
      s.onerror = () => reject(new Error(`cannot load ${src}`));
      document.head.appendChild(s);
    });
  }

  async function gpuAdapter() {
    try {
      return navigator.gpu ? await navigator.gpu.requestAdapter() : null;
    } catch (e) {
      return null;
    }
  }

  async function createSession(cfg) {
    const webgpu = !L.forceWasm && (await gpuAdapter());
    await loadScript(cfg.ort + (webgpu ? "ort.webgpu.min.js" : "ort.wasm.min.js"));
    ort.env.wasm.wasmPaths = new URL(cfg.ort, location.href).href;
    // threads need a cross-origin isolated page (SharedArrayBuffer); otherwise one thread
    ort.env.wasm.numThreads = self.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;
    const tries = webgpu ? [["webgpu", "WebGPU"], ["wasm", "WebAssembly"]] : [["wasm", "WebAssembly"]];
    let last;
    for (const [ep, name] of tries) {
      try {
        const session = await ort.InferenceSession.create(cfg.model, { executionProviders: [ep] });
        return [session, name];
      } catch (e) {
        last = e;
      }
    }
    throw last;
  }

  // called once with the server's page config (browser.BrowserModel.page_config)
  L.init = async function (cfg) {
    if (!cfg || L.cfg) return;
    L.cfg = cfg;
    buildPanel();
    if (!cfg.model) return fail(cfg.why || "the in-browser model is not available");
    setStatus("Loading the model into your browser…");
    try {
      [L.session, L.backend] = await createSession(cfg);
      L.state = "ready";
      document.body.classList.add("ivf-browser");
      label("fuse-web-btn", "Fuse in your browser");
      label("fuse-btn", "Fuse on the server");
      setStatus(`Model loaded: Fuse runs in your browser (${L.backend}); the server's Fuse stays beside it.`);
    } catch (e) {
      fail(`the model could not be loaded in your browser (${String(e.message || e).split("\n")[0]})`);
    }
  };

  function fail(why) {
    L.state = "failed";
    L.why = why;
    document.body.classList.remove("ivf-browser");
    setStatus(`Fuse runs on the server: ${why}.`);
  }

  function label(id, text) {
    const b = $(id);
    if (b) b.textContent = text;
  }

  function setStatus(text) {
    const el = $("ivf-status");
    if (el) el.textContent = text;
  }

  function showBrowserResults(on) {
    document.body.classList.toggle("ivf-shown", on);
  }

  // The browser's Fuse button shows once the model has loaded (browser.head hides it until
  // then); the server's stays beside it, as the visitor's choice and the fallback.
  const CSS = `
    body:not(.ivf-shown) #ivf-results {display: none}
    body.ivf-shown #fused-clean, body.ivf-shown #fused-intervened, body.ivf-shown #difference,
    body.ivf-shown #difference-caption, body.ivf-shown #gates, body.ivf-shown #gate-captions {display: none !important}
    #ivf-web canvas {width: 100%; height: auto; image-rendering: auto; display: block}
    #ivf-web .ivf-grid {display: grid; grid-template-columns: repeat(3, 1fr); gap: 6px; align-items: start}
    #ivf-web .ivf-gates {display: grid; grid-template-columns: auto repeat(3, 1fr); gap: 4px 6px; align-items: center}
    #ivf-web .ivf-note {font-size: 0.9em; margin: 4px 0}
    #ivf-web .ivf-bar {display: flex; flex-wrap: wrap; gap: 4px 14px; align-items: center; font-size: 0.95em}
    #ivf-web #ivf-live-view {cursor: crosshair}`;

  function buildPanel() {
    const host = $("ivf-web");
    if (!host || host.dataset.built) return;
    host.dataset.built = "1";
    const style = document.createElement("style");
    style.textContent = CSS;
    document.head.appendChild(style);
    const cell = (id, label) => `<div><div class="ivf-note">${label}</div><canvas id="${id}"></canvas></div>`;
    const rows = LEVELS.map((lv) => `<div class="ivf-note">${lv}</div><canvas id="ivf-gate-${lv}-clean"></canvas>` +
      `<canvas id="ivf-gate-${lv}-int"></canvas><canvas id="ivf-gate-${lv}-change"></canvas>`).join("");
    host.innerHTML = `
      <div id="ivf-status" class="ivf-note"></div>
      <div id="ivf-results">
        <div id="ivf-where" class="ivf-note"></div>
        <div class="ivf-grid">${cell("ivf-fused-clean", "Fused, clean")}${cell("ivf-fused-int", "Fused, intervened")}
          ${cell("ivf-diff", "Change in the fused image")}</div>
        <div id="ivf-diff-caption" class="ivf-note"></div>
        <div class="ivf-note"><b>Invariance gates</b>: clean | intervened | change (red: opened, blue: closed)</div>
        <div class="ivf-gates">${rows}</div>
        <div id="ivf-gate-caption" class="ivf-note"></div>
        <div class="ivf-bar"><label><input type="checkbox" id="ivf-live"> Live: one hole follows the pointer over the
          intervened image</label>
          <label>hides the <select id="ivf-live-modality"><option value="infrared">infrared</option>
          <option value="visible">visible</option><option value="both">both</option></select> image</label>
          <span id="ivf-fps"></span></div>
      </div>`;
    host.addEventListener("change", (ev) => {
      if (ev.target.id === "ivf-live") L.live.on = ev.target.checked;
    });
    // a new pair (an example clicked, a file chosen): the browser's old results go, as the server's do
    const newPair = (ev) => {
      if (ev.target.closest && ev.target.closest("#examples, #visible-input, #infrared-input")) {
        showBrowserResults(false);
        L.live.on = false;
        const live = $("ivf-live");
        if (live) live.checked = false;
      }
    };
    document.addEventListener("change", newPair, true);
    document.addEventListener("click", (ev) => {
      if (ev.target.closest && ev.target.closest("#examples")) newPair(ev);
    }, true);
    // a server Fuse (the visitor's click, or the fallback's): its results show, and the page says so
    document.addEventListener("click", (ev) => {
      if (ev.target.closest && ev.target.closest("#fuse-btn")) {
        showBrowserResults(false);
        L.where = "on the server";
        setStatus(`Last result: computed on the server${L.fallbackWhy ? ` (${L.fallbackWhy})` : ""}.`);
        L.fallbackWhy = "";
      }
    }, true);
    const view = $("ivf-fused-int");
    view.addEventListener("pointermove", (ev) => {
      if (!L.live.on || !L.pair) return;
      const r = view.getBoundingClientRect();
      L.moveHole((ev.clientX - r.left) / r.width, (ev.clientY - r.top) / r.height);
    });
  }

  // ------------------------------------------------------------------ images
  async function pixels(url, width, height) {
    const blob = await (await fetch(url)).blob();
    // the file's own bytes: no colour management, no premultiplied alpha (as the server decodes)
    const bmp = await createImageBitmap(blob, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
    if (width && (bmp.width !== width || bmp.height !== height)) {
      throw new Error(`decoded ${bmp.width}x${bmp.height}, expected ${width}x${height}`);
    }
    const c = new OffscreenCanvas(bmp.width, bmp.height);
    const ctx = c.getContext("2d", { willReadFrequently: true });
    ctx.drawImage(bmp, 0, 0);
    return ctx.getImageData(0, 0, bmp.width, bmp.height);
  }

  // OpenCV's float RGB <-> YCrCb (ivfusion.io.visible_to_ycrcb / restore_colour)
  function toYCrCb(rgba, n) {
    const y = new Float32Array(n), cr = new Float32Array(n), cb = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      const r = rgba[4 * i] / 255, g = rgba[4 * i + 1] / 255, b = rgba[4 * i + 2] / 255;
      const yy = 0.299 * r + 0.587 * g + 0.114 * b;
      y[i] = yy;
      cr[i] = (r - yy) * 0.713 + 0.5;
      cb[i] = (b - yy) * 0.564 + 0.5;
    }
    return { y, cr, cb };
  }

  function toRGB(y, cr, cb, n, chromaKeep) {
    const out = new Uint8ClampedArray(4 * n);
    for (let i = 0; i < n; i++) {
      const k = chromaKeep ? chromaKeep[i] : 1;
      const dr = (cr[i] - 0.5) * k, db = (cb[i] - 0.5) * k;
      out[4 * i] = Math.round((y[i] + 1.403 * dr) * 255);
      out[4 * i + 1] = Math.round((y[i] - 0.714 * dr - 0.344 * db) * 255);
      out[4 * i + 2] = Math.round((y[i] + 1.773 * db) * 255);
      out[4 * i + 3] = 255;
    }
    return out;
  }

  // infrared: equal channels are grey; otherwise OpenCV's fixed-point RGB2GRAY on 8 bits
  function toGrey(rgba, n) {
    const out = new Float32Array(n);
    let equal = true;
    for (let i = 0; i < n && equal; i++) equal = rgba[4 * i] === rgba[4 * i + 1] && rgba[4 * i] === rgba[4 * i + 2];
    for (let i = 0; i < n; i++) {
      const v = equal ? rgba[4 * i] : (rgba[4 * i] * 4899 + rgba[4 * i + 1] * 9617 + rgba[4 * i + 2] * 1868 + 8192) >> 14;
      out[i] = v / 255;
    }
    return out;
  }

  async function loadPair(vUrl, iUrl, h, w) {
    const key = `${vUrl}|${iUrl}`;
    if (L.pair && L.pair.key === key) return L.pair;
    const [vis, ir] = await Promise.all([pixels(vUrl, w, h), pixels(iUrl, w, h)]);
    const n = h * w;
    const ycc = toYCrCb(vis.data, n);
    // the visible image as processed (uint8), which the intervened colour is taken from (runs.colour_from_visible)
    const visRGB = toRGB(ycc.y, ycc.cr, ycc.cb, n);
    L.pair = { key, h, w, n, ycc, ycc2: toYCrCb(visRGB, n), ir: toGrey(ir.data, n) };
    L.clean = null;
    return L.pair;
  }

  async function maskArray(url, p) {
    const img = await pixels(url, p.w, p.h);
    const m = new Float32Array(p.n);
    for (let i = 0; i < p.n; i++) m[i] = img.data[4 * i] / 255;
    return m;
  }

  // ------------------------------------------------------------------ the network
  async function forward(p, mVi, mIr) {
    const dims = [1, 1, p.h, p.w];
    const t = (a) => new ort.Tensor("float32", a, dims);
    const t0 = performance.now();
    const out = await L.session.run({ visible_y: t(p.ycc.y), infrared: t(p.ir), keep_visible: t(mVi),
      keep_infrared: t(mIr) });
    const ms = performance.now() - t0;
    const gates = LEVELS.map((lv) => {
      const g = out[`gate_${lv}`];
      return { data: g.data, h: g.dims[2], w: g.dims[3] };
    });
    return { fused: out.fused.data, gates, ms };
  }

  // ------------------------------------------------------------------ drawing
  function lutColour(lut, t) {
    return lut[Math.max(0, Math.min(255, Math.round(t * 255)))];
  }

  function paint(id, w, h, rgba) {
    const c = $(id);
    if (!c) return;
    c.width = w;
    c.height = h;
    c.getContext("2d").putImageData(new ImageData(rgba, w, h), 0, 0);
  }

  function heat(id, values, w, h, vmin, vmax, lut) {
    const out = new Uint8ClampedArray(4 * values.length);
    const span = vmax - vmin || 1;
    for (let i = 0; i < values.length; i++) {
      const c = lutColour(lut, (values[i] - vmin) / span);
      out[4 * i] = c[0];
      out[4 * i + 1] = c[1];
      out[4 * i + 2] = c[2];
      out[4 * i + 3] = 255;
    }
    paint(id, w, h, out);
  }

  function percentile(values, q) {
    const step = Math.max(1, Math.floor(Math.sqrt(values.length / 200000)));
    const sample = [];
    for (let i = 0; i < values.length; i += step) sample.push(values[i]);
    sample.sort((a, b) => a - b);
    return sample.length ? sample[Math.min(sample.length - 1, Math.round((q / 100) * (sample.length - 1)))] : 0;
  }

  // viz.gate_range: fixed 0..1, or the level's 1st-99th percentiles (at least 0.01 wide)
  function gateRange(a, b, stretched) {
    if (!stretched) return [0, 1];
    const both = new Float32Array(a.length + b.length);
    both.set(a);
    both.set(b, a.length);
    let lo = percentile(both, 1), hi = percentile(both, 99);
    if (hi - lo < 0.01) {
      const mid = Math.min(Math.max((lo + hi) / 2, 0.005), 0.995);
      [lo, hi] = [mid - 0.005, mid + 0.005];
    }
    return [lo, hi];
  }

  function render(res, stretched) {
    const p = L.pair, c = L.clean, cfg = L.cfg;
    paint("ivf-fused-clean", p.w, p.h, toRGB(c.fused, p.ycc.cr, p.ycc.cb, p.n));
    // colour only where the network saw the visible image (runs.colour_from_visible)
    const allKept = res.mVi.every((v) => v >= 1);
    const rgb = allKept ? toRGB(res.fused, p.ycc.cr, p.ycc.cb, p.n) : toRGB(res.fused, p.ycc2.cr, p.ycc2.cb, p.n, res.mVi);
    paint("ivf-fused-int", p.w, p.h, rgb);
    const diff = new Float32Array(p.n);
    let sum = 0, max = 0, changed = 0;
    for (let i = 0; i < p.n; i++) {
      const d = Math.abs(res.fused[i] - c.fused[i]) * 255;
      diff[i] = d;
      sum += d;
      if (d > max) max = d;
      if (d >= 1) changed++;
    }
    const top = [1, 2, 4, 8, 16, 32, 64, 128, 255].find((v) => Math.max(max, 1) <= v) || 255;
    heat("ivf-diff", diff, p.w, p.h, 0, top, cfg.luts.change);
    $("ivf-diff-caption").textContent = `grey levels: mean ${(sum / p.n).toFixed(2)}, max ${max.toFixed(0)}; ` +
      `${((100 * changed) / p.n).toFixed(1)}% of pixels changed (colour scale 0 to ${top})`;
    const captions = [];
    LEVELS.forEach((lv, k) => {
      const g0 = c.gates[k], g1 = res.gates[k];
      const [lo, hi] = gateRange(g0.data, g1.data, stretched);
      heat(`ivf-gate-${lv}-clean`, g0.data, g0.w, g0.h, lo, hi, cfg.luts.gate);
      heat(`ivf-gate-${lv}-int`, g1.data, g1.w, g1.h, lo, hi, cfg.luts.gate);
      const ch = g1.data.map((v, i) => v - g0.data[i]);
      const abs = ch.map(Math.abs);
      const limit = Math.max(percentile(abs, 99), cfg.changeFloor);
      heat(`ivf-gate-${lv}-change`, ch, g1.w, g1.h, -limit, limit, cfg.luts.diverging);
      const mean = (a) => a.reduce((s, v) => s + v, 0) / a.length;
      captions.push(`${lv}: mean gate ${mean(g0.data).toFixed(3)} → ${mean(g1.data).toFixed(3)}`);
    });
    $("ivf-gate-caption").textContent = captions.join("; ") + (stretched ? " (stretched per level)" : " (scale 0 to 1)");
  }

  // ------------------------------------------------------------------ Fuse
  // m: the server's answer (browser.BrowserModel.masks); vis, ir: the image components' values
  L.fuse = async function (m, vis, ir, gateScale) {
    if (L.state !== "ready") return toServer(L.why || "the model is not loaded in your browser");
    if (!m || m.compute !== "browser") return toServer(m ? m.why : "no masks came back");
    const t0 = performance.now();
    try {
      const p = await loadPair(vis.url, ir.url, m.height, m.width);
      const [mVi, mIr] = await Promise.all(m.masks.map((u) => maskArray(u, p)));
      let cleanMs = 0;
      if (!L.clean) {
        const ones = new Float32Array(p.n).fill(1);
        L.clean = await forward(p, ones, ones);
        cleanMs = L.clean.ms;
      }
      const res = await forward(p, mVi, mIr);
      Object.assign(res, { mVi, mIr, label: m.label, holePx: m.holePx });
      L.stretched = /stretch/.test(gateScale || "");
      render(res, L.stretched);
      L.last = { ...res, backend: L.backend, clean: L.clean, where: `in your browser (${L.backend})` };
      L.where = L.last.where;
      L.count = (L.count || 0) + 1;
      showBrowserResults(true);
      const total = performance.now() - t0;
      $("ivf-where").textContent = `Computed in your browser (${L.backend}): ${m.label}; forward ` +
        `${res.ms.toFixed(0)} ms${cleanMs ? ` (+ ${cleanMs.toFixed(0)} ms for the clean pass)` : ""}, ` +
        `${total.toFixed(0)} ms in all.`;
    } catch (e) {
      toServer(`the browser could not compute it (${String(e.message || e).split("\n")[0]})`);
    }
  };

  // the server's Fuse, as the fallback: the page says why
  function toServer(why) {
    L.fallbackWhy = why;
    const btn = $("fuse-btn");
    if (btn) btn.click();
  }

  // the forward pass alone at height x width (random inputs, nothing hidden): the median of
  // `runs` timed passes after one untimed, in ms (tools/browser_bench.py prints it)
  L.bench = async function (h, w, runs) {
    const n = h * w, rnd = () => Float32Array.from({ length: n }, Math.random);
    const p = { h, w, n, ycc: { y: rnd() }, ir: rnd() };
    const ones = new Float32Array(n).fill(1);
    await forward(p, ones, ones);
    const times = [];
    for (let k = 0; k < runs; k++) times.push((await forward(p, ones, ones)).ms);
    times.sort((a, b) => a - b);
    return times[Math.floor(times.length / 2)];
  };

  // ------------------------------------------------------------------ live mode
  // (fx, fy): the pointer in [0, 1] over the intervened image; one hole of the last Fuse's
  // hole size, in the chosen modality, on top of nothing else
  L.moveHole = function (fx, fy) {
    L.live.pending = [fx, fy];
    if (!L.live.busy) liveStep();
  };

  async function liveStep() {
    const p = L.pair;
    if (!L.live.pending || !p || !L.clean || !L.last) return;
    const [fx, fy] = L.live.pending;
    L.live.pending = null;
    L.live.busy = true;
    const t0 = performance.now();
    try {
      const side = L.last.holePx || 16;
      const x0 = Math.round(fx * p.w - side / 2), y0 = Math.round(fy * p.h - side / 2);
      const hole = new Float32Array(p.n).fill(1);
      for (let y = Math.max(0, y0); y < Math.min(p.h, y0 + side); y++) {
        for (let x = Math.max(0, x0); x < Math.min(p.w, x0 + side); x++) hole[y * p.w + x] = 0;
      }
      const which = ($("ivf-live-modality") || {}).value || "infrared";
      const ones = new Float32Array(p.n).fill(1);
      const mVi = which === "infrared" ? ones : hole, mIr = which === "visible" ? ones : hole;
      const res = await forward(p, mVi, mIr);
      Object.assign(res, { mVi, mIr, label: `live hole (${which})`, holePx: side });
      render(res, L.stretched);
      L.last = { ...res, backend: L.backend, clean: L.clean, where: `in your browser (${L.backend})` };
      L.live.count = (L.live.count || 0) + 1;
      // the rate while the pointer keeps moving: one frame (masks, forward, drawing) after
      // another, over the last five frames
      L.live.frames = L.live.frames.concat([performance.now() - t0]).slice(-5);
      L.live.fps = 1000 / (L.live.frames.reduce((a, b) => a + b, 0) / L.live.frames.length);
      $("ivf-fps").textContent = `${L.live.fps.toFixed(1)} frames/s (forward ${res.ms.toFixed(0)} ms, ${L.backend})`;
      $("ivf-where").textContent = `Computed in your browser (${L.backend}): live hole in the ${which} image.`;
    } finally {
      L.live.busy = false;
    }
    if (L.live.pending) requestAnimationFrame(liveStep);
  }
})();
