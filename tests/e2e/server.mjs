// server.mjs - starts a built loraserve for a test file and stops it.
//
// The binary is $LORASERVE_BIN (default build/loraserve), the model
// $LORASERVE_SHARED/models/kjv-tiny-f32.gguf (default ../shared). The server
// binds 127.0.0.1 port 0 and prints the port it got, so two test files never
// race for a port; each server gets its own temporary data directory (or the
// one passed, which is then kept). The LoRA fixtures: $LORASERVE_SHARED/models/lora
// (GGUF-LoRA files and PEFT dirs of the same three adapters) and their golden
// outputs.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import OpenAI from 'openai';

export const SHARED = resolve(process.env.LORASERVE_SHARED || '../shared');
export const BIN = resolve(process.env.LORASERVE_BIN || 'build/loraserve');
export const MODEL = join(SHARED, 'models', 'kjv-tiny-f32.gguf');
export const MODEL_ID = 'kjv-tiny-f32';

export const BASE_CASES = ['short-genesis', 'short-moses', 'short-modern', 'long-kjv', 'long-mixed'];

export function golden(name, config = 'base') {
  return JSON.parse(readFileSync(join(SHARED, 'fixtures', 'golden', `${config}__${name}.json`),
    'utf8'));
}

export const LORA_DIR = join(SHARED, 'models', 'lora');
export const ADAPTERS = ['fortunes', 'jargon', 'devil'];
export const ggufPath = (name) => join(LORA_DIR, `kjv-tiny-lora-${name}.gguf`);
export const peftPath = (name) => join(LORA_DIR, `peft-${name}`);

// Starts the server with extra flags; resolves once /health answers. With
// short, starts it as `loraserve --model ...` (no command word); env is added
// to the environment.
export async function startServer(args = [], { timeoutMs = 60000, env = {}, short = false,
  model = MODEL, dataDir: keptDir = null } = {}) {
  const dataDir = keptDir || mkdtempSync(join(tmpdir(), 'loraserve-e2e-'));
  const argv = [...(short ? [] : ['serve']), '--model', model, '--host', '127.0.0.1',
    '--port', '0', '--data-dir', dataDir, ...args];
  if (!args.includes('--threads')) argv.push('--threads', '2');
  const proc = spawn(BIN, argv, {
    stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ...env },
  });
  let stderr = '';
  const exited = new Promise((res) => proc.on('exit', (code, signal) => res({ code, signal })));
  const port = await new Promise((res, rej) => {
    const timer = setTimeout(() => rej(new Error(`server did not start:\n${stderr}`)), timeoutMs);
    proc.stderr.on('data', (d) => {
      stderr += d;
      const m = /listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(stderr);
      if (m) {
        clearTimeout(timer);
        res(Number(m[1]));
      }
    });
    exited.then(({ code }) => {
      clearTimeout(timer);
      if (!keptDir) rmSync(dataDir, { recursive: true, force: true });
      rej(new Error(`server exited with ${code}:\n${stderr}`));
    });
  });
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; ; i++) {
    try {
      if ((await fetch(`${url}/health`)).ok) break;
    } catch (e) {
      if (i > 100) throw e;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  const server = {
    url,
    port,
    dataDir,
    proc,
    exited,
    stderr: () => stderr,
    client: new OpenAI({ baseURL: `${url}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 60000 }),
    // SIGTERM, then the exit status (SIGKILL after 30 s).
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
      const kill = setTimeout(() => proc.kill('SIGKILL'), 30000);
      const r = await exited;
      clearTimeout(kill);
      if (!keptDir) rmSync(dataDir, { recursive: true, force: true });
      return r;
    },
  };
  return server;
}

// POST a JSON body (or raw string / Buffer); returns { status, body (parsed if JSON), text }.
export async function post(url, path, body, headers = {}) {
  const raw = typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body);
  const r = await fetch(url + path, {
    method: 'POST', body: raw, headers: { 'Content-Type': 'application/json', ...headers },
  });
  const text = await r.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: r.status, headers: r.headers, body: json, text };
}

// Reads an SSE stream into its parsed events (the string "[DONE]" for the last).
export async function readEvents(response) {
  const text = await response.text();
  const events = [];
  for (const block of text.split('\n\n')) {
    if (block === '') continue;
    if (!block.startsWith('data: ')) throw new Error(`not an SSE data line: ${block}`);
    const data = block.slice(6);
    events.push(data === '[DONE]' ? data : JSON.parse(data));
  }
  return { text, events };
}

// Any method with an optional JSON body; returns { status, headers, body, text } like post().
export async function call(url, method, path, body) {
  return callAs(url, null, method, path, body);
}

// call() with "Authorization: Bearer key" (none when key is null).
export async function callAs(url, key, method, path, body) {
  const headers = body === undefined ? {} : { 'Content-Type': 'application/json' };
  if (key) headers.Authorization = `Bearer ${key}`;
  const r = await fetch(url + path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: r.status, headers: r.headers, body: json, text };
}

// VmRSS of a process in bytes (Linux).
export function rssBytes(pid) {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : NaN;
}

export async function health(url) {
  return (await fetch(`${url}/health`)).json();
}

// Polls cond (sync or async) every 5 ms until it holds; throws after ms.
export async function until(cond, ms = 10000) {
  const t0 = Date.now();
  while (!(await cond())) {
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${cond}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}
