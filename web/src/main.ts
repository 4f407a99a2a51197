/**
 * yakk's browser peer: the page. With a code in the URL fragment (`/#<code>`) it joins at once
 * and receives; otherwise it offers to send (pick or drop files: it opens a room and shows
 * the code, a link and a QR code) or to receive with a typed code.
 */

import qrcode from "qrcode-generator";
import { host, join, parseCode, SessionFailure, type Connected } from "./session";
import { DataStream } from "./stream";
import {
  escapeText,
  hashFile,
  receive,
  send,
  TransferError,
  type Entry,
  type ProgressInfo,
  type Sink,
  type Source,
} from "./transfer";
import { WORDS } from "./words";

const $ = <T extends HTMLElement = HTMLElement>(id: string): T => {
  const el = document.getElementById(id);
  if (!el) throw new Error(`#${id} missing`);
  return el as T;
};

const SECTIONS = ["landing", "code-section", "offer-section", "progress-section", "done-section"];

function show(...ids: string[]): void {
  for (const s of SECTIONS) $(s).hidden = !ids.includes(s);
}

function status(text: string): void {
  $("status").textContent = text;
}

function showError(text: string): void {
  const e = $("error");
  e.textContent = text;
  e.hidden = false;
  status("");
  document.body.dataset.state = "error";
}

function state(s: string): void {
  document.body.dataset.state = s;
}

export function formatBytes(n: number): string {
  const units = ["B", "kB", "MB", "GB", "TB"];
  let v = n;
  let u = 0;
  while (v >= 1000 && u < units.length - 1) {
    v /= 1000;
    u++;
  }
  return `${u === 0 ? v : v.toFixed(v < 10 ? 2 : 1)} ${units[u]}`;
}

function formatSecs(s: number): string {
  if (!isFinite(s)) return "–";
  if (s < 60) return `${Math.ceil(s)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${Math.round(s % 60)} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

function showProgress(verb: string, p: ProgressInfo): void {
  show("progress-section");
  state("progress");
  const bar = $<HTMLProgressElement>("progress-bar");
  if (p.total) {
    bar.max = p.total;
    bar.value = p.bytes;
  } else bar.removeAttribute("value");
  const pct = p.total ? ` of ${formatBytes(p.total)} (${Math.floor((100 * p.bytes) / p.total)} %)` : "";
  const eta = p.eta !== null && p.total ? `, ${formatSecs(p.eta)} left` : "";
  $("progress-text").textContent = `${verb} ${formatBytes(p.bytes)}${pct} at ${formatBytes(p.rate)}/s${eta}${p.name ? ` — ${escapeText(p.name)}` : ""}`;
}

/** A person's words for a failure. */
function explain(e: unknown): string {
  if (e instanceof SessionFailure) return e.message.charAt(0).toUpperCase() + e.message.slice(1);
  if (e instanceof TransferError) {
    const m = e.message.charAt(0).toUpperCase() + e.message.slice(1);
    return e.kind === "damaged" ? `${m}: the data did not match its hash (BLAKE3), so nothing of it was kept.` : m;
  }
  return `Something went wrong: ${e instanceof Error ? e.message : String(e)}`;
}

// ---------------------------------------------------------------- receiving

/** Memory-backed file: parts become Blobs (the browser may keep those on disk) as they fill. */
class BlobSink implements Sink {
  private parts: Blob[] = [];
  private pending: Uint8Array[] = [];
  private pendingBytes = 0;
  constructor(
    private readonly entry: Entry,
    private readonly done: (name: string, blob: Blob) => void,
  ) {}
  write(chunk: Uint8Array): void {
    this.pending.push(chunk);
    this.pendingBytes += chunk.length;
    if (this.pendingBytes >= 16 * 1024 * 1024) this.flush();
  }
  private flush(): void {
    if (this.pending.length === 0) return;
    this.parts.push(new Blob(this.pending as BlobPart[]));
    this.pending = [];
    this.pendingBytes = 0;
  }
  finish(): void {
    this.flush();
    this.done(this.entry.name, new Blob(this.parts, { type: "application/octet-stream" }));
    this.parts = [];
  }
  discard(): void {
    this.parts = [];
    this.pending = [];
  }
}

/** Written to disk as it arrives (File System Access API, secure contexts in Chromium). */
class DiskSink implements Sink {
  constructor(private readonly w: FileSystemWritableFileStream) {}
  async write(chunk: Uint8Array): Promise<void> {
    await this.w.write(chunk as BufferSource);
  }
  async finish(): Promise<void> {
    await this.w.close();
  }
  async discard(): Promise<void> {
    await this.w.abort().catch(() => {});
  }
}

interface PickerWindow {
  showSaveFilePicker?: (o?: { suggestedName?: string }) => Promise<FileSystemFileHandle>;
  showDirectoryPicker?: (o?: { mode?: string }) => Promise<FileSystemDirectoryHandle>;
}

function lastComponent(name: string): string {
  return name.split("/").pop() ?? name;
}

function addDownload(name: string, blob: Blob): void {
  const li = document.createElement("li");
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  // Folders arrive as separate downloads; browsers do not let a page create folders there.
  a.download = name.split("/").join("_");
  a.textContent = `Save ${name}`;
  a.dataset.testid = "download";
  a.dataset.name = name;
  li.append(a, sizeSpan(blob.size));
  $("downloads").append(li);
}

function sizeSpan(n: number): HTMLElement {
  const s = document.createElement("span");
  s.className = "size";
  s.textContent = formatBytes(n);
  return s;
}

function ask(entries: Entry[]): Promise<((e: Entry) => Promise<Sink>) | null> {
  show("offer-section");
  state("offer");
  status("");
  const files = entries.filter((e) => e.kind !== 0);
  const folders = entries.filter((e) => e.kind === 0);
  const total = files.reduce((n, e) => n + e.size, 0);
  const streaming = entries.some((e) => e.kind === 2);
  $("offer-summary").textContent =
    `${files.length} file${files.length === 1 ? "" : "s"}` +
    (folders.length ? ` in ${folders.length} folder${folders.length === 1 ? "" : "s"}` : "") +
    (streaming ? ", size unknown until it ends" : `, ${formatBytes(total)}`);
  const list = $("offer-list");
  list.textContent = "";
  for (const e of entries.slice(0, 1000)) {
    const li = document.createElement("li");
    li.textContent = e.kind === 0 ? `${e.name}/` : e.name;
    if (e.kind === 1) li.append(sizeSpan(e.size));
    list.append(li);
  }
  const picker = window as unknown as PickerWindow;
  const disk = window.isSecureContext && (files.length === 1 ? !!picker.showSaveFilePicker : !!picker.showDirectoryPicker);
  $("accept-disk").hidden = !disk || streaming;
  $("offer-note").textContent = disk
    ? "Accept keeps the files in the browser until they are complete (then Save each one); saving to disk writes them as they arrive, for large files."
    : "The files are kept in the browser until they are complete and verified, then you Save each one" +
      (window.isSecureContext ? "." : " (this page is not a secure context, so it cannot write to disk as data arrives).");
  return new Promise((resolve) => {
    const done = (v: ((e: Entry) => Promise<Sink>) | null) => {
      $<HTMLButtonElement>("accept").onclick = null;
      $<HTMLButtonElement>("accept-disk").onclick = null;
      $<HTMLButtonElement>("decline").onclick = null;
      resolve(v);
    };
    // Folders need nothing saved: their files arrive as separate downloads.
    $<HTMLButtonElement>("accept").onclick = () =>
      done(async (e) => (e.kind === 0 ? { write() {}, finish() {}, discard() {} } : new BlobSink(e, addDownload)));
    $<HTMLButtonElement>("decline").onclick = () => done(null);
    $<HTMLButtonElement>("accept-disk").onclick = async () => {
      try {
        if (files.length === 1) {
          const handle = await picker.showSaveFilePicker!({ suggestedName: lastComponent(files[0]!.name) });
          done(async (e) => {
            if (e.kind === 0) return { write() {}, finish() {}, discard() {} };
            return new DiskSink(await handle.createWritable());
          });
        } else {
          const dir = await picker.showDirectoryPicker!({ mode: "readwrite" });
          done(async (e) => {
            const parts = e.name.split("/");
            let d = dir;
            const last = e.kind === 0 ? parts.length : parts.length - 1;
            for (let i = 0; i < last; i++) d = await d.getDirectoryHandle(parts[i]!, { create: true });
            if (e.kind === 0) return { write() {}, finish() {}, discard() {} };
            const fh = await d.getFileHandle(parts[parts.length - 1]!, { create: true });
            return new DiskSink(await fh.createWritable());
          });
        }
      } catch {
        /* the person closed the picker: the question stays */
      }
    };
  });
}

async function receiveWith(typed: string): Promise<void> {
  const code = parseCode(typed);
  if (!code) {
    showError(`"${escapeText(typed.trim()).slice(0, 80)}" is not a yakk code: codes look like 417-crossbow-nimble.`);
    return;
  }
  show();
  state("joining");
  let conn: Connected | null = null;
  try {
    const joined = await join(code, ["DataConn1"], (s) => status(`${s.charAt(0).toUpperCase()}${s.slice(1)}…`));
    conn = joined.conn;
    status("Connected. Waiting for the offer…");
    const s = new DataStream(joined.channels[0]!, {
      opener: true,
      window: conn.window,
      maxMessage: conn.pc.sctp?.maxMessageSize || undefined,
    });
    const gone = conn.ended.then((why) => {
      s.abort();
      throw new TransferError(why, "gone");
    });
    gone.catch(() => {});
    const r = await Promise.race([
      receive(s, {
        ask,
        progress: (p) => showProgress("Received", p),
      }),
      gone,
    ]);
    show("done-section");
    state("done");
    status("");
    $("done-text").textContent =
      `Received ${r.files} file${r.files === 1 ? "" : "s"}, ${formatBytes(r.bytes)} in ${r.secs.toFixed(1)} s ` +
      `(${formatBytes(r.bytes / Math.max(r.secs, 0.001))}/s), each checked against its BLAKE3 hash.` +
      ($("downloads").childElementCount ? " Save them below." : "");
  } catch (e) {
    show();
    const partial = e instanceof TransferError && e.kind === "gone" && $("progress-text").textContent !== "";
    showError(explain(e) + (partial ? ". The transfer did not finish and nothing of it was kept: ask the sender to send it again." : ""));
  } finally {
    conn?.close();
  }
}

// ---------------------------------------------------------------- sending

interface Picked {
  path: string;
  file: File | null;
}

/** Offer entries: folders (parents first) before the files in them. */
function entriesOf(picked: Picked[]): { folders: string[]; files: Picked[] } {
  const folders = new Set<string>();
  const files: Picked[] = [];
  for (const p of picked) {
    const parts = p.path.split("/");
    const upto = p.file ? parts.length - 1 : parts.length;
    for (let i = 1; i <= upto; i++) folders.add(parts.slice(0, i).join("/"));
    if (p.file) files.push(p);
  }
  return { folders: [...folders].sort(), files };
}

async function walk(entry: FileSystemEntry, out: Picked[]): Promise<void> {
  if (entry.isFile) {
    const file = await new Promise<File>((res, rej) => (entry as FileSystemFileEntry).file(res, rej));
    out.push({ path: entry.fullPath.replace(/^\//, ""), file });
  } else if (entry.isDirectory) {
    out.push({ path: entry.fullPath.replace(/^\//, ""), file: null });
    const reader = (entry as FileSystemDirectoryEntry).createReader();
    for (;;) {
      const batch = await new Promise<FileSystemEntry[]>((res, rej) => reader.readEntries(res, rej));
      if (batch.length === 0) break;
      for (const e of batch) await walk(e, out);
    }
  }
}

function drawQr(canvas: HTMLCanvasElement, text: string): void {
  const q = qrcode(0, "M");
  q.addData(text);
  q.make();
  const n = q.getModuleCount();
  const quiet = 4;
  const scale = Math.max(1, Math.floor(canvas.width / (n + 2 * quiet)));
  const ctx = canvas.getContext("2d");
  if (!ctx) return;
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  ctx.fillStyle = "#000";
  const off = Math.floor((canvas.width - scale * n) / 2);
  for (let r = 0; r < n; r++) for (let c = 0; c < n; c++) if (q.isDark(r, c)) ctx.fillRect(off + c * scale, off + r * scale, scale, scale);
}

async function sendPicked(picked: Picked[]): Promise<void> {
  if (picked.length === 0) return;
  $("error").hidden = true;
  const { folders, files } = entriesOf(picked);
  const total = files.reduce((n, f) => n + f.file!.size, 0);
  show();
  status("Opening a room…");
  let conn: Connected | null = null;
  try {
    const hosted = await host(WORDS, 2);
    const code = `${hosted.room.name}-${hosted.password}`;
    const link = `${location.origin}${location.pathname}#${code}`;
    $("code-text").textContent = code;
    const a = $<HTMLAnchorElement>("code-link");
    a.href = link;
    a.textContent = link;
    $("code-command").textContent = `YAKK_CODE=${code}@${location.host} yakk filereceive`;
    $("send-list").textContent = `Offering ${files.length} file${files.length === 1 ? "" : "s"}${folders.length ? ` in ${folders.length} folder${folders.length === 1 ? "" : "s"}` : ""}, ${formatBytes(total)}.`;
    drawQr($<HTMLCanvasElement>("qr"), link);
    show("code-section");
    state("code");
    status("Waiting for the other side…");
    // Hash while waiting: the offer carries each file's BLAKE3.
    let hashed = 0;
    const hashing = (async () => {
      const sources: Source[] = folders.map((name) => ({ entry: { kind: 0, name, size: 0, hash: null }, file: null }));
      for (const f of files) {
        const base = hashed;
        const hash = await hashFile(f.file!, (d) => (hashed = base + d));
        hashed = base + f.file!.size;
        sources.push({ entry: { kind: 1, name: f.path, size: f.file!.size, hash }, file: f.file });
      }
      return sources;
    })();
    conn = await hosted.accept((s) => status(`${s.charAt(0).toUpperCase()}${s.slice(1)}…`));
    status("Connected.");
    const ch = await conn.incoming.next();
    const s = new DataStream(ch, { opener: false, window: conn.window, maxMessage: conn.pc.sctp?.maxMessageSize || undefined });
    await s.opened();
    if (hashed < total) status("Connected. Preparing the files (hashing)…");
    const sources = await hashing;
    status("Waiting for the other side to accept…");
    const gone = conn.ended.then((why) => {
      s.abort();
      throw new TransferError(why, "gone");
    });
    gone.catch(() => {});
    const r = await Promise.race([send(s, sources, (p) => showProgress("Sent", p)), gone]);
    show("done-section");
    state("done");
    status("");
    $("done-text").textContent =
      `Sent ${r.files} file${r.files === 1 ? "" : "s"}, ${formatBytes(r.bytes)} in ${r.secs.toFixed(1)} s ` +
      `(${formatBytes(r.bytes / Math.max(r.secs, 0.001))}/s); the receiver checked every file.`;
  } catch (e) {
    show();
    showError(explain(e));
  } finally {
    conn?.close();
  }
}

function setupLanding(): void {
  show("landing");
  state("landing");
  const pick = $<HTMLInputElement>("pick");
  pick.onchange = () => void sendPicked([...(pick.files ?? [])].map((f) => ({ path: f.name, file: f })));
  const folder = $<HTMLInputElement>("pick-folder");
  folder.onchange = () =>
    void sendPicked([...(folder.files ?? [])].map((f) => ({ path: f.webkitRelativePath || f.name, file: f })));
  const drop = $("drop");
  drop.ondragover = (e) => {
    e.preventDefault();
    drop.classList.add("over");
  };
  drop.ondragleave = () => drop.classList.remove("over");
  drop.ondrop = async (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    const items = [...(e.dataTransfer?.items ?? [])];
    const picked: Picked[] = [];
    for (const it of items) {
      const entry = it.webkitGetAsEntry?.();
      if (entry) await walk(entry, picked);
      else {
        const f = it.getAsFile();
        if (f) picked.push({ path: f.name, file: f });
      }
    }
    void sendPicked(picked);
  };
  $<HTMLFormElement>("code-form").onsubmit = (e) => {
    e.preventDefault();
    const typed = $<HTMLInputElement>("code-input").value;
    void receiveWith(typed);
  };
}

function start(): void {
  const fragment = location.hash.slice(1);
  if (fragment) {
    // The code is a secret: out of the address bar (and history) at once.
    history.replaceState(null, "", location.pathname + location.search);
    let typed = fragment;
    try {
      typed = decodeURIComponent(fragment);
    } catch {
      /* as typed */
    }
    void receiveWith(typed);
  } else setupLanding();
}

start();
