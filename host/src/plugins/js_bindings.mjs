// What `hestia plugin build` changes in the JavaScript that componentize-js generates to
// lift an export's arguments out of linear memory (its "bindings"), before they are
// snapshotted into the component. Run by node; `builder.rs` embeds this file.
//
// SpiderMonkey runs these bindings in its interpreter (no JIT inside WebAssembly), so each
// operation counts; for a scope policy's `authorize` (about sixty field reads, fifteen
// strings) the generated code is most of a warm decision. Up to the call of the plugin's
// function, each export:
// - takes the memory's buffer once, and reads 32-bit and 8-bit fields as elements of a
//   `Uint32Array` and a `Uint8Array` over it, where the generated code calls
//   `dataView($memory)` per read (the engine's native `buffer` getter, a buffer comparison,
//   then a `DataView` method call). Sound because everything lifted was written by the host
//   before the call: the engine's buffer covers linear memory from address 0 to the heap's
//   end when taken, a buffer taken earlier stays valid over what it covered when the heap
//   grows, and what the lifting calls (`$dealloc`, `TextDecoder`) never moves memory. The
//   canonical ABI aligns every 32-bit field to 4 (the generated code checks list pointers),
//   and WebAssembly is little-endian, as the typed arrays read here are.
// - makes each resource it borrows (`hestia:plugin@0.4.0`'s request and claims) an object
//   of the resource's class holding the handle, where the generated code also defines the
//   property through `Object.defineProperty` and registers the object with a
//   `FinalizationRegistry` that would drop the handle when the object is collected: a
//   borrowed handle is dropped when the call ends (the generated code does that too), so
//   a collection after the call would drop a handle number that is no longer the
//   object's. For the same reason a method call on a resource no longer unregisters it.
// - awaits the plugin's result only when it is a thenable: a plain decision is lowered at
//   once instead of after a turn of the job queue, an `async` policy is awaited as before.
// Lowering the result, after the plugin's function has run (and may have grown the heap),
// keeps the generated code. The generated `_debugLog(...)` statements go everywhere: they
// look for `globalThis.process`, which the engine does not have, and build an object per
// call for nothing.
//
// componentize-js has no option for any of this, so its text is rewritten: the code of the
// pinned version (`COMPONENTIZE_JS` in builder.rs). An export whose code does not have the
// expected shape is left as generated, and the caller reports how many were rewritten.

const VIEWS =
  '  const $hestiaBuffer = $memory.buffer, $hestiaView = dataView($memory), ' +
  '$hestiaU8 = new Uint8Array($hestiaBuffer), ' +
  '$hestiaU32 = new Uint32Array($hestiaBuffer, 0, $hestiaBuffer.byteLength >>> 2);\n';

const thenable = (v) =>
  `if (${v} !== null && (typeof ${v} === 'object' || typeof ${v} === 'function') ` +
  `&& typeof ${v}.then === 'function') ${v} = await ${v}`;

/** Returns `{ src, exports }`: the rewritten bindings and how many exports were rewritten. */
export function tightenBindings(src) {
  const header = /^(?:async )?function export_[\w$]+\([^)]*\) \{\n/gm;
  let out = '';
  let at = 0;
  let exports = 0;
  for (const m of src.matchAll(header)) {
    const body = m.index + m[0].length;
    const call = callOfPlugin(src, body);
    if (!call) continue;
    // The plugin's arguments are evaluated before it runs: they may read through the views.
    const lift = src.slice(body, call.end + 1);
    const viewed = lift
      .replaceAll('dataView($memory)', '$hestiaView')
      .replaceAll('$memory.buffer', '$hestiaBuffer')
      .replace(/\$hestiaView\.getUint32\(([^,()]+), true\)/g, '$hestiaU32[($1) >>> 2]')
      .replace(/\$hestiaView\.getUint8\(([^,()]+), true\)/g, '$hestiaU8[$1]');
    let tight = viewed.replace(BORROW, BORROWED);
    if (tight === lift && !call.awaited) continue;
    if (call.awaited) {
      // `const` becomes `let`: the result may be reassigned once awaited.
      const plain = call.awaited.replace('await ', '').replace(/^const /, 'let ');
      tight = `${tight.replace(call.awaited, plain)}; ${thenable(call.result)}`;
    }
    out += src.slice(at, body) + (viewed === lift ? '' : VIEWS) + tight;
    at = call.end + 1;
    exports++;
  }
  out += src.slice(at);
  out = out.replace(METHOD_UNREGISTER, '');
  out = out.replace(/^[ \t]*_debugLog\([^;]*?\);[ \t]*\n/gm, '');
  return { src: out, exports };
}

// A borrowed resource as the generated code lifts it: the object, its handle, its
// registration for finalization, and its entry in the call's borrows (dropped at the end).
const BORROW = new RegExp(
  String.raw`var (rsc\d+) = new\.target === ([\w$]+) \? this : Object\.create\(\2\.prototype\);\n` +
    String.raw`[ \t]*Object\.defineProperty\(\1, symbolRscHandle, \{ writable: true, value: (handle\d+)\}\);\n` +
    String.raw`[ \t]*finalizationRegistry_[\w$]+\.register\(\1, \3, \1\);\n` +
    String.raw`([ \t]*curResourceBorrows\.push\()`,
  'g',
);
const BORROWED = 'var $1 = Object.create($2.prototype);\n  $1[symbolRscHandle] = $3;\n$4';

// The generated start of a resource method (`[method]…`), which unregisters `self`.
const METHOD_UNREGISTER = new RegExp(
  String.raw`^[ \t]*finalizationRegistry_[\w$]+\.unregister\(arg0\);[ \t]*\n` +
    String.raw`(?=[ \t]*_debugLog\('\[Instruction::CallWasm\] enter', \{\n[ \t]*funcName: '\[method\])`,
  'gm',
);

// The call of the plugin's function in the export whose body starts at `body` (`ret = await
// f(...)`, or `const hostRetN = await f(...)` in a `try` for a world's `result`): the index
// of the `)` that closes its arguments, the variable that takes the result, and when the
// call is awaited, the text before the function's name (`ret = await `); none when there
// is no such call before the next top-level function.
function callOfPlugin(src, body) {
  const call = /\n[ \t]*((?:const )?(ret|hostRet\d+) = (await )?)[\w$.]+\(/g;
  call.lastIndex = body;
  const found = call.exec(src);
  const ends = ['\nfunction ', '\nasync function ']
    .map((f) => src.indexOf(f, body))
    .filter((i) => i !== -1);
  const limit = Math.min(src.length, ...ends);
  if (!found || found.index > limit) return null;
  let depth = 0;
  for (let i = found.index + found[0].length - 1; i < limit; i++) {
    if (src[i] === '(') depth++;
    else if (src[i] === ')' && --depth === 0) {
      return { end: i, result: found[2], awaited: found[3] ? found[1] : null };
    }
  }
  return null;
}
