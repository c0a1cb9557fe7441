// The optional native build step (`npm run build:native`): compiles native/ into
// native/build/Release/dystro.node with node-gyp and prints one line saying whether it did or why not.
//
// It always exits 0. The addon is an accelerator, not a requirement: when it is missing the wasm and js
// backends carry on (src/kernels/select.ts), so a machine without a compiler must still install and
// build the package (TOOLCHAIN.md, gotcha 3). It never downloads Node headers: it uses the headers of
// the running Node (npm's `nodedir` setting, or <prefix>/include/node next to the node binary) or
// node-gyp's cache, and otherwise says it skipped.
//
//   DYSTRO_SKIP_NATIVE=1      skip the build
//   DYSTRO_NATIVE_VERBOSE=1   show node-gyp's output as it runs
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { homedir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const nativeDir = dirname(fileURLToPath(import.meta.url));
const packageRoot = dirname(nativeDir);
const addonPath = join(nativeDir, 'build', 'Release', 'dystro.node');
const isWindows = process.platform === 'win32';
const BUILD_TIMEOUT_MS = 5 * 60 * 1000;

function say(line) {
  process.stdout.write(`dystro: ${line}\n`);
}

function flag(name) {
  const v = process.env[name];
  return v !== undefined && v !== '' && v !== '0' && v.toLowerCase() !== 'false';
}

/** Whether `command --version` runs (used to find a compiler, make and Python before node-gyp does). */
function runs(command) {
  const r = spawnSync(command, ['--version'], { stdio: 'ignore', shell: false, timeout: 10_000 });
  return r.status === 0;
}

/** The locally installed node-gyp (a devDependency), else the one npm bundles and names in the environment. */
function findNodeGyp() {
  try {
    return createRequire(join(packageRoot, 'package.json')).resolve('node-gyp/bin/node-gyp.js');
  } catch {
    const fromNpm = process.env.npm_config_node_gyp;
    return fromNpm && existsSync(fromNpm) ? fromNpm : undefined;
  }
}

function hasHeaders(dir) {
  return existsSync(join(dir, 'include', 'node', 'node_api.h')) && existsSync(join(dir, 'include', 'node', 'common.gypi'));
}

/**
 * Node headers that need no download: npm's `nodedir` (npm exports it as npm_config_nodedir to scripts;
 * this machine's npm config sets /usr), then the prefix of the running node binary (<prefix>/bin/node,
 * headers in <prefix>/include/node, as in distribution packages and the official tarballs). Returns the
 * directory for --nodedir, '' when node-gyp's own cache already holds this version's headers, or
 * undefined when there are none.
 */
function findNodeDir() {
  const candidates = [process.env.npm_config_nodedir, dirname(dirname(process.execPath))];
  for (const dir of candidates) if (dir && hasHeaders(dir)) return dir;
  const cacheRoot =
    process.env.npm_config_devdir ||
    (process.platform === 'darwin'
      ? join(homedir(), 'Library', 'Caches', 'node-gyp')
      : isWindows
        ? join(process.env.LOCALAPPDATA || join(homedir(), 'AppData', 'Local'), 'node-gyp', 'Cache')
        : join(process.env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'node-gyp'));
  return hasHeaders(join(cacheRoot, process.versions.node)) ? '' : undefined;
}

/** The first line of node-gyp's output that names the failure, for the one-line report. */
function firstError(output) {
  const lines = output.split(/\r?\n/).map((l) => l.trim());
  const hit =
    lines.find((l) => /\berror\b/i.test(l) && !/^gyp (ERR!|info)/.test(l)) ||
    lines.find((l) => /^gyp ERR! (stack )?Error:/.test(l)) ||
    lines.find((l) => /^gyp ERR!/.test(l));
  return hit ? hit.slice(0, 300) : 'no error message';
}

function build() {
  if (flag('DYSTRO_SKIP_NATIVE')) {
    say('native addon skipped (DYSTRO_SKIP_NATIVE is set); the wasm and js backends will be used.');
    return;
  }
  const nodeGyp = findNodeGyp();
  if (!nodeGyp) {
    say('native addon not built: node-gyp not found (it is a devDependency); the wasm and js backends will be used.');
    return;
  }
  if (!isWindows) {
    // A CXX from the environment may be a command line (`ccache g++`): trust it and let node-gyp report.
    const cxx = process.env.CXX || ['c++', 'g++', 'clang++'].find(runs);
    if (!cxx) {
      say('native addon not built: no C++ compiler found (install g++ or clang++, or set CXX); the wasm and js backends will be used.');
      return;
    }
    if (!['make', 'gmake'].some(runs)) {
      say('native addon not built: `make` not found; the wasm and js backends will be used.');
      return;
    }
    const python = process.env.npm_config_python || process.env.PYTHON;
    if (!(python ? runs(python) : ['python3', 'python'].some(runs))) {
      say('native addon not built: Python 3 not found (node-gyp needs it); the wasm and js backends will be used.');
      return;
    }
  }
  const nodeDir = findNodeDir();
  if (nodeDir === undefined) {
    say(
      `native addon not built: no Node ${process.versions.node} headers found (set npm's nodedir, e.g. \`npm config set nodedir /usr\`); not downloading them. The wasm and js backends will be used.`,
    );
    return;
  }

  const verbose = flag('DYSTRO_NATIVE_VERBOSE');
  const args = [nodeGyp, 'rebuild', '--directory', nativeDir, '--jobs', 'max'];
  if (nodeDir) args.push(`--nodedir=${nodeDir}`);
  const started = process.hrtime.bigint();
  const r = spawnSync(process.execPath, args, {
    cwd: packageRoot,
    encoding: 'utf8',
    stdio: verbose ? 'inherit' : 'pipe',
    timeout: BUILD_TIMEOUT_MS,
    maxBuffer: 64 * 1024 * 1024,
  });
  const seconds = (Number(process.hrtime.bigint() - started) / 1e9).toFixed(1);
  const where = relative(packageRoot, addonPath);

  if (r.error || r.status !== 0) {
    const why = r.error
      ? r.error.message
      : r.signal
        ? `node-gyp was killed by ${r.signal}`
        : `node-gyp exited with ${r.status}: ${firstError(`${r.stdout ?? ''}\n${r.stderr ?? ''}`)}`;
    say(`native addon not built (${why}); the wasm and js backends will be used. DYSTRO_NATIVE_VERBOSE=1 shows the full log.`);
    return;
  }
  if (!existsSync(addonPath)) {
    say(`native addon not built: node-gyp succeeded but ${where} is missing; the wasm and js backends will be used.`);
    return;
  }
  // Load it once here so a broken build is reported now rather than as a silent fallback at run time.
  try {
    const addon = createRequire(import.meta.url)(addonPath);
    say(`native addon built: ${where} (ABI ${addon.abiVersion()}, ${seconds} s).`);
  } catch (err) {
    say(`native addon built at ${where} but failed to load: ${err instanceof Error ? err.message : String(err)}`);
  }
}

try {
  build();
} catch (err) {
  say(`native addon not built: ${err instanceof Error ? err.message : String(err)}; the wasm and js backends will be used.`);
}
// Whatever happened, never fail the install or the build that called us.
process.exitCode = 0;
