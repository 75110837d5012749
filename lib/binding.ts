/**
 * Finds and loads the native addon: `NODE_MOE_BINDING` (an explicit .node path), else a local build
 * (`build/Release`), else a prebuild shipped in `prebuilds/<platform>-<arch>/`. Works when npm's
 * install scripts never ran, because a prebuild is just a file in the package.
 */
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { NativeBindingError } from './errors.js';
import type { NativeBinding } from './native-types.js';

const require = createRequire(import.meta.url);
/** Package root: this file lives in dist/ (built) or lib/ (tests), both one level down. */
export const packageRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

let cached: NativeBinding | undefined;

export function loadBinding(): NativeBinding {
  if (cached) return cached;
  const explicit = process.env.NODE_MOE_BINDING;
  try {
    cached = (explicit ? require(path.resolve(explicit)) : require('node-gyp-build')(packageRoot)) as NativeBinding;
  } catch (cause) {
    throw new NativeBindingError(bindingHelp(cause, explicit), { cause });
  }
  return cached;
}

function bindingHelp(cause: unknown, explicit: string | undefined): string {
  const reason = cause instanceof Error ? cause.message.split('\n')[0] : String(cause);
  const target = `${process.platform}-${process.arch}, Node ${process.versions.node} (N-API ${process.versions.napi})`;
  if (explicit) {
    return `node-moe could not load the addon named by NODE_MOE_BINDING=${explicit}: ${reason}`;
  }
  return [
    `node-moe could not load its native addon for ${target}.`,
    `Reason: ${reason}`,
    'Possible solutions:',
    '- Build it from source (needs python3, make and a C++17 compiler): npm rebuild node-moe',
    '  (if your package manager blocks install scripts: npm install-scripts approve node-moe, then reinstall)',
    '- Or from a clone of node-moe: npm run build:native (node-gyp) or npm run build:cmake (cmake-js)',
    '- Or point NODE_MOE_BINDING at a node_moe.node file you built elsewhere',
  ].join('\n');
}
