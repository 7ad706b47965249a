// Build-time fix for componentize-js 0.23.0's string lowering; imported by build.mjs only.
//
// Why: every string a JavaScript component returns (the event's id, type, data, each extension
// name and value, ...) goes through the generated binding `_utf8AllocateAndEncode`, which
// counts the UTF-8 length one character at a time in JavaScript before encoding. Inside the
// component that JavaScript runs interpreted, so this loop cost ~40% of a warm `handle` call
// (2.46 M -> 1.52 M wasm instructions per call of this plugin, measured with
// `gateway plugin run --repeat 20 --fuel ...`). The replacement lets the engine's native
// TextEncoder do the counting and encoding in one call.
//
// Same bytes out: `TextEncoder.encode` writes exactly what the original's `encodeInto` wrote
// (UTF-8, a lone surrogate as U+FFFD, three bytes, which the original also counted as three).
//
// How: componentize-js writes the generated bindings to `initializer.js` with
// `fs/promises.writeFile` just before snapshotting them into the component; this module wraps
// that function for the build and replaces the one generated function. It checks the original
// text exactly: any other componentize-js version (package.json pins 0.23.0) fails the build
// here instead of silently shipping something unreviewed. Delete this module when
// componentize-js encodes strings natively itself.
import fsp from 'node:fs/promises';
import { syncBuiltinESMExports } from 'node:module';

const ORIGINAL = `function _utf8AllocateAndEncode(s, realloc, memory) {
  if (typeof s !== 'string') {
    throw new TypeError('expected a string, received [' + typeof s + ']');
  }
  if (s.length === 0) { return { ptr: 1, len: 0 }; }
  // Compute the exact allocation size up front. Some older preview1
  // adapters only support an initial allocation, not a subsequent shrink.
  let len = 0;
  let codepoints = 0;
  for (let i = 0; i < s.length; i++) {
    const ch = s.charCodeAt(i);
    codepoints++;
    if (ch < 0x80) { len += 1; }
    else if (ch < 0x800) { len += 2; }
    else if (ch >= 0xd800 && ch <= 0xdbff &&
    i + 1 < s.length &&
    (s.charCodeAt(i + 1) & 0xfc00) === 0xdc00) {
      len += 4;
      i++;
    } else { len += 3; }
  }
  const ptr = realloc(0, 0, 1, len);
  const { read, written } = TEXT_ENCODER_UTF8.encodeInto(
  s,
  new Uint8Array(memory.buffer, ptr, len),
  );
  if (read !== s.length || written !== len) {
    throw new Error('failed to encode whole string');
  }
  const res = { ptr, len, codepoints };
  return res;
}
`;

// `codepoints` is left out: only the original function itself read it (checked below).
const REPLACEMENT = `function _utf8AllocateAndEncode(s, realloc, memory) {
  if (typeof s !== 'string') {
    throw new TypeError('expected a string, received [' + typeof s + ']');
  }
  if (s.length === 0) { return { ptr: 1, len: 0 }; }
  const bytes = TEXT_ENCODER_UTF8.encode(s);
  const len = bytes.length;
  // The exact size in one allocation, as before; \`memory.buffer\` is read after realloc,
  // which may grow the memory.
  const ptr = realloc(0, 0, 1, len);
  new Uint8Array(memory.buffer, ptr, len).set(bytes);
  return { ptr, len };
}
`;

let replaced = 0;

/** Replaces the generated function in one bindings text; throws if it is not the known one. */
export function patchBindings(bindings) {
  const start = bindings.indexOf(ORIGINAL);
  if (start < 0 || bindings.indexOf(ORIGINAL, start + 1) >= 0) {
    throw new Error(
      'string-lowering.mjs: the generated bindings do not contain the expected ' +
        '_utf8AllocateAndEncode exactly once; componentize-js is not 0.23.0? Review the new ' +
        'bindings (debugBindings option) and update or delete this module.',
    );
  }
  const patched =
    bindings.slice(0, start) + REPLACEMENT + bindings.slice(start + ORIGINAL.length);
  if (patched.includes('.codepoints')) {
    throw new Error('string-lowering.mjs: the bindings read `.codepoints`; keep it in REPLACEMENT');
  }
  return patched;
}

/** Applies `patchBindings` to the bindings componentize-js writes, until `finish()`. */
export function install() {
  const original = fsp.writeFile;
  fsp.writeFile = function (path, data, ...rest) {
    if (typeof path === 'string' && path.endsWith('initializer.js') && typeof data === 'string') {
      data = patchBindings(data);
      replaced++;
    }
    return original.call(this, path, data, ...rest);
  };
  syncBuiltinESMExports();
  return {
    /** Restores writeFile; throws unless exactly one bindings file was patched. */
    finish() {
      fsp.writeFile = original;
      syncBuiltinESMExports();
      if (replaced !== 1) {
        throw new Error(
          `string-lowering.mjs: patched ${replaced} bindings files, expected 1 ` +
            '(componentize-js no longer writes initializer.js with fs/promises.writeFile?)',
        );
      }
    },
  };
}
