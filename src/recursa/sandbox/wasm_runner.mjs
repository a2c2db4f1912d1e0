// Runs recursa's sandbox worker (worker.py) inside Pyodide (CPython compiled to WebAssembly)
// under Deno. The host starts it as
//
//   deno run --no-prompt --allow-read=<pyodide dir> wasm_runner.mjs <pyodide dir>
//
// and nothing else is allowed: no network, no environment, no subprocesses, no FFI, no writes,
// no reads outside the Pyodide files. Python code reaching for the host through `import js`
// (Deno.readTextFileSync, fetch, Deno.Command...) meets the same permission wall and gets a
// NotCapable error. Never run Pyodide under plain Node: Node has no such wall, and `import js`
// there is full host access.
//
// Frames (4-byte big-endian length + UTF-8 JSON) arrive on stdin and leave on stdout, the
// same protocol as the process tier. The first frame, read here in JavaScript, is
// {"type": "boot", "worker": <worker.py source>, "file_size_limit": n, "fs_quota": n}; every
// later frame is read by worker.py itself through the `_recursa_io` module registered below,
// whose read() blocks on stdin synchronously, so llm_query needs no JSPI or async bridge.
//
// Pyodide's own stdout and stderr (raw fd 1/2 writes from model code) go to Deno's stderr,
// which the host only drains, so model code cannot write into the frame stream through them.
//
// `--make-snapshot <out>` (run once at install, with write access to <out> only) saves a
// memory snapshot of an initialised interpreter; workers start from it in about a second.

const [pyodideDir, mode, snapshotOut] = Deno.args;
const PREIMPORT = "import ast, io, itertools, json, struct, threading, time, traceback, re";

function readInto(buf) {
  let off = 0;
  while (off < buf.length) {
    const got = Deno.stdin.readSync(buf.subarray(off));
    if (got === null || got === 0) return off;
    off += got;
  }
  return off;
}

function writeAll(stream, bytes) {
  let off = 0;
  while (off < bytes.length) off += stream.writeSync(bytes.subarray(off));
}

function readBootFrame() {
  const header = new Uint8Array(4);
  if (readInto(header) < 4) Deno.exit(0);
  const size = new DataView(header.buffer).getUint32(0);
  const body = new Uint8Array(size);
  if (readInto(body) < size) Deno.exit(0);
  const msg = JSON.parse(new TextDecoder().decode(body));
  if (msg.type !== "boot") throw new Error(`expected a boot frame, got ${msg.type}`);
  return msg;
}

async function load(options) {
  const url = new URL(`file://${pyodideDir}/pyodide.mjs`);
  const { loadPyodide } = await import(url.href);
  return await loadPyodide({ indexURL: `${pyodideDir}/`, ...options });
}

async function loadWorkerRuntime() {
  let snapshot = null;
  try {
    snapshot = Deno.readFileSync(`${pyodideDir}/snapshot.bin`);
  } catch {
    snapshot = null; // not made (or unreadable): a cold start, slower but the same
  }
  if (snapshot) {
    try {
      return await load({ _loadSnapshot: snapshot });
    } catch (err) {
      console.error(`recursa: snapshot unusable, starting cold: ${err}`);
    }
  }
  const py = await load({});
  py.runPython(PREIMPORT);
  return py;
}

// Files live in Pyodide's in-memory file system, held in JavaScript memory outside the
// WebAssembly heap, so the 4 GiB wasm32 bound does not cover them. Cap each file (like
// RLIMIT_FSIZE: EFBIG) and the total grown (ENOSPC); deleted files are not credited back.
function limitFiles(py, fileLimit, quota) {
  const FS = py.FS;
  const [EFBIG, ENOSPC] = py.runPython("import errno; [errno.EFBIG, errno.ENOSPC]").toJs();
  const sizes = new Map();
  let total = 0;
  function grow(node, newSize) {
    if (fileLimit && newSize > fileLimit) throw new FS.ErrnoError(EFBIG);
    const old = sizes.get(node.id) ?? node.usedBytes ?? 0;
    if (newSize <= old) return;
    if (quota && total + (newSize - old) > quota) throw new FS.ErrnoError(ENOSPC);
    total += newSize - old;
    sizes.set(node.id, newSize);
  }
  const { write, truncate, ftruncate } = FS;
  FS.write = function (stream, buffer, offset, length, position, canOwn) {
    const pos = typeof position === "number" ? position : stream.position;
    if (length > 0) grow(stream.node, pos + length);
    return write.call(this, stream, buffer, offset, length, position, canOwn);
  };
  FS.truncate = function (path, len) {
    const node = typeof path === "string" ? FS.lookupPath(path, { follow: true }).node : path;
    grow(node, len);
    return truncate.call(this, path, len);
  };
  FS.ftruncate = function (fd, len) {
    grow(FS.getStreamChecked(fd).node, len);
    return ftruncate.call(this, fd, len);
  };
}

async function makeSnapshot() {
  const py = await load({ _makeSnapshot: true });
  py.runPython(PREIMPORT);
  Deno.writeFileSync(snapshotOut, py.makeMemorySnapshot());
}

async function serve() {
  const boot = readBootFrame();
  const py = await loadWorkerRuntime();
  const toStderr = { write: (buf) => (writeAll(Deno.stderr, buf), buf.length) };
  py.setStdout(toStderr);
  py.setStderr(toStderr);
  limitFiles(py, boot.file_size_limit || 0, boot.fs_quota || 0);
  py.registerJsModule("_recursa_io", {
    read(n) {
      const buf = new Uint8Array(n);
      const got = Deno.stdin.readSync(buf);
      return got === null ? new Uint8Array(0) : buf.subarray(0, got);
    },
    write(bytes) {
      writeAll(Deno.stdout, bytes);
    },
  });
  const ns = py.globals.get("dict")();
  ns.set("__name__", "recursa_worker");
  py.runPython(boot.worker, { globals: ns, filename: "worker.py" });
  py.runPython("serve_js()", { globals: ns });
}

try {
  if (mode === "--make-snapshot") await makeSnapshot();
  else await serve();
  Deno.exit(0);
} catch (err) {
  // os._exit(n) inside Pyodide surfaces as an ExitStatus; keep its status for the host.
  if (err && typeof err.status === "number") Deno.exit(err.status);
  console.error(`recursa wasm runner: ${err?.stack ?? err}`);
  Deno.exit(70);
}
