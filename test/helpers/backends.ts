/** The backends that load on this machine, for suites that run once per backend (STYLE 5). */
import { availableBackends } from '../../src/kernels/select.ts';
import type { KernelBackend } from '../../src/kernels/abi.ts';

const { loaded, attempts } = availableBackends();
for (const a of attempts) if (!a.loaded) console.log(`  (backend ${a.backend} not loaded: ${a.reason})`);

/** Backends under test. CI sets DYSTRO_REQUIRE_BACKENDS=wasm,native,js so a silently missing one fails. */
export const backends: readonly KernelBackend[] = loaded;
export const reference: KernelBackend = loaded.find((b) => b.name === 'js')!;

const required = (process.env.DYSTRO_REQUIRE_BACKENDS ?? '').split(',').map((s) => s.trim()).filter(Boolean);
for (const name of required) {
  if (!loaded.some((b) => b.name === name)) {
    throw new Error(`backend ${name} is required (DYSTRO_REQUIRE_BACKENDS) but did not load: ${attempts.find((a) => a.backend === name)?.reason}`);
  }
}
