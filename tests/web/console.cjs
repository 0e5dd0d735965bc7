// The web console in a real browser (Debian's chromium, headless, driven by
// puppeteer-core over CDP). Usage: node console.cjs < commands (JSON lines)
//   check: the acceptance scenario, as JSON lines the test reads
//   bench SECONDS: frames, bytes and latency while the panel changes
// The test (tests/tests/web.rs) acts on the VPs and checks what they got.
"use strict";
// CommonJS, so that NODE_PATH (target/node/node_modules) finds puppeteer-core.
const puppeteer = require("puppeteer-core");
const readline = require("node:readline");

(async () => {

const say = (o) => process.stdout.write(JSON.stringify(o) + "\n");
const browser = await puppeteer.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
try {
  const page = await browser.newPage();
  await page.setViewport({ width: 900, height: 1400 });
  // Commands from the test, one JSON per line on stdin; an answer per line.
  const rl = readline.createInterface({ input: process.stdin });
  for await (const line of rl) {
    const c = JSON.parse(line);
    try {
      if (c.op === "open") {
        const r = await page.goto(c.url, { waitUntil: "load" });
        say({ ok: true, status: r.status() });
      } else if (c.op === "fetch") {
        // A request as another page would make it (status only).
        const s = await page.evaluate(async (u) => (await fetch(u)).status, c.url);
        say({ ok: true, status: s });
      } else if (c.op === "pixel") {
        // Wait until the canvas shows `rgb` at (x, y) in panel pixels.
        const deadline = Date.now() + (c.timeout || 10000);
        let got = null;
        while (Date.now() < deadline) {
          got = await page.evaluate(({ x, y }) => {
            const cv = document.getElementById("panel");
            if (!cv.width) return null;
            const d = cv.getContext("2d").getImageData(x, y, 1, 1).data;
            return [d[0], d[1], d[2]];
          }, c);
          if (got && (!c.rgb || got.every((v, i) => Math.abs(v - c.rgb[i]) <= 2))) break;
          await new Promise((r) => setTimeout(r, 20));
        }
        say({ ok: !c.rgb || (got && got.every((v, i) => Math.abs(v - c.rgb[i]) <= 2)), rgb: got });
      } else if (c.op === "click") {
        // A click at panel pixel (x, y), through the canvas' on-screen box.
        const box = await (await page.$("#panel")).boundingBox();
        const w = await page.evaluate(() => document.getElementById("panel").width);
        const h = await page.evaluate(() => document.getElementById("panel").height);
        await page.mouse.click(box.x + (c.x + 0.5) * box.width / w, box.y + (c.y + 0.5) * box.height / h);
        say({ ok: true });
      } else if (c.op === "button") {
        // The list is drawn anew on each status change: a button found just
        // before may be gone by the click; find it again.
        let err = null;
        for (let i = 0; i < 10; i++) {
          try {
            await page.click(`button[data-vp="${c.vp}"][data-action="${c.action}"]`);
            err = null;
            break;
          } catch (e) {
            err = e;
            await new Promise((r) => setTimeout(r, 50));
          }
        }
        say(err ? { ok: false, error: String(err) } : { ok: true });
      } else if (c.op === "type") {
        await page.focus("#panel");
        await page.keyboard.type(c.text, { delay: 20 });
        say({ ok: true });
      } else if (c.op === "state") {
        say({ ok: true, state: await page.evaluate(() => window.cells) });
      } else if (c.op === "watch") {
        // Frames and bytes over c.ms, and each frame's arrival time.
        const r = await page.evaluate(async (ms) => {
          const s = { f: window.cells.frames, b: window.cells.bytes, t: performance.now() };
          await new Promise((r) => setTimeout(r, ms));
          return { frames: window.cells.frames - s.f, bytes: window.cells.bytes - s.b, ms: performance.now() - s.t };
        }, c.ms);
        say({ ok: true, ...r });
      } else if (c.op === "until-frame") {
        // The time (ms, page clock) until the next frame after now.
        const r = await page.evaluate(async (timeout) => {
          const n = window.cells.frames, t0 = performance.now();
          while (window.cells.frames === n && performance.now() - t0 < timeout) await new Promise((r) => setTimeout(r, 1));
          return { ms: performance.now() - t0, frames: window.cells.frames - n };
        }, c.timeout || 2000);
        say({ ok: true, ...r });
      } else if (c.op === "sound") {
        await page.click("#sound");
        say({ ok: true });
      } else if (c.op === "level") {
        // Wait until the sound's level at c.freq is above c.min (or, with
        // c.max, stays below it while c.chunks chunks arrive).
        const deadline = Date.now() + (c.timeout || 10000);
        let s = null;
        const start = await page.evaluate(() => window.cells.sound.chunks);
        while (Date.now() < deadline) {
          s = await page.evaluate(() => window.cells.sound);
          const lv = s.level[c.freq] || 0;
          if (c.min !== undefined && lv > c.min) break;
          if (c.max !== undefined && s.chunks - start >= c.chunks) break;
          await new Promise((r) => setTimeout(r, 20));
        }
        const lv = (s && s.level[c.freq]) || 0;
        const ok = c.min !== undefined ? lv > c.min : (s.chunks - start >= c.chunks && lv < c.max);
        say({ ok, level: lv, chunks: s ? s.chunks : 0 });
      } else if (c.op === "quit") {
        say({ ok: true });
        break;
      }
    } catch (e) {
      say({ ok: false, error: String(e) });
    }
  }
} finally {
  await browser.close();
}
})().catch((e) => { process.stdout.write(JSON.stringify({ ok: false, error: String(e) }) + "\n"); process.exit(1); });
