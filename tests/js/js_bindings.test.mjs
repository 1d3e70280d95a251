// host/src/plugins/js_bindings.mjs: the rewritten lifting code reads the same arguments as
// the generated code, lowers the same results, awaits what the plugin returns only when it is
// a thenable, and leaves code of another shape as it is. The bindings below have the shapes
// componentize-js 0.23.0 generates (an export with a plain result; one with a `result` in a
// `try`); tests/tests/all/plugin_langs.rs builds the real ones and runs their cases.
//
//   node --test tests/js/
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { tightenBindings } from '../../host/src/plugins/js_bindings.mjs';

const BINDINGS = `
let dv = new DataView(new ArrayBuffer());
const dataView = mem => dv.buffer === mem.buffer ? dv : dv = new DataView(mem.buffer);
const TEXT_DECODER_UTF8 = new TextDecoder();
const _debugLog = (...args) => { debugged.push(args); };

async function export_pick(arg0, arg1) {
  _debugLog(' [Instruction::CallInterface] (sync, @ enter)');
  var ptr0 = dataView($memory).getUint32(arg0 + 0, true);
  var len0 = dataView($memory).getUint32(arg0 + 4, true);
  var result0 = TEXT_DECODER_UTF8.decode(new Uint8Array($memory.buffer, ptr0, len0));
  if (len0 !== 0) $dealloc(ptr0, len0, 1);
  let variant1;
  if (dataView($memory).getUint8(arg0 + 8, true)) {
    variant1 = dataView($memory).getUint32(arg0 + 12, true);
  } else {
    variant1 = undefined;
  }
  let ret;
  ret = await pick({
    name: result0,
    count: variant1,
  }, BigInt.asUintN(64, BigInt(dataView($memory).getBigInt64(arg0 + 16, true))));
  dataView($memory).setUint32(arg1 + 0, ret.length, true);
  _debugLog('[Instruction::Return]', {
    funcName: 'pick',
    paramCount: 0,
  });
  return;
}

async function export_check(arg0, arg1, arg2) {
  var ptr0 = arg0;
  var len0 = arg1;
  var result0 = TEXT_DECODER_UTF8.decode(new Uint8Array($memory.buffer, ptr0, len0));
  let ret;
  try {
    const hostRet1 = await check(result0);
    ret = { tag: 'ok', val: hostRet1 };
  } catch (e) {
    ret = { tag: 'err', val: String(e) };
  }
  dataView($memory).setUint8(arg2 + 0, ret.tag === 'ok' ? 0 : 1, true);
  return ret;
}
`;

// Linear memory with a `pick` argument record at 16 (a string at 64, an option<u32>, a u64)
// and the string "checked" at 96; `buffer` counts its calls, as the engine's getter costs.
function memory() {
  const buffer = new ArrayBuffer(256);
  const view = new DataView(buffer);
  new Uint8Array(buffer).set(new TextEncoder().encode('hello'), 64);
  new Uint8Array(buffer).set(new TextEncoder().encode('checked'), 96);
  view.setUint32(16, 64, true);
  view.setUint32(20, 5, true);
  view.setUint8(24, 1);
  view.setUint32(28, 7, true);
  view.setBigInt64(32, 1234567890123n, true);
  const mem = { reads: 0 };
  Object.defineProperty(mem, 'buffer', { get() { mem.reads++; return buffer; } });
  return { mem, view };
}

function load(src, pick, check) {
  const { mem, view } = memory();
  const freed = [];
  const debugged = [];
  const make = new Function(
    '$memory', '$dealloc', 'pick', 'check', 'debugged',
    `${src}\nreturn { export_pick, export_check };`,
  );
  const exports = make(mem, (...a) => freed.push(a), pick, check, debugged);
  return { ...exports, mem, view, freed, debugged };
}

// The generated bindings and the rewritten ones, over the same memory and plugin functions.
const both = (pick, check) => [
  load(BINDINGS, pick, check),
  load(tightenBindings(BINDINGS).src, pick, check),
];

test('both exports are rewritten and the debug statements are gone', () => {
  const { src, exports } = tightenBindings(BINDINGS);
  assert.equal(exports, 2);
  assert.doesNotMatch(src, /_debugLog\(/);
  assert.match(src, /const _debugLog = /);
  // Before the call, every read goes through the views; after it, the generated code stays.
  const pick = src.slice(
    src.indexOf('async function export_pick'),
    src.indexOf('async function export_check'),
  );
  const call = pick.indexOf('pick({');
  assert.ok(!pick.slice(0, call).includes('dataView($memory).get'), pick);
  assert.ok(pick.slice(call).includes('dataView($memory).setUint32(arg1 + 0'), pick);
});

test('the arguments lifted and the result lowered are those of the generated code', async () => {
  const seen = [];
  const pick = (record, stamp) => { seen.push([record, stamp]); return 'abc'; };
  for (const b of both(pick, (s) => s.length)) {
    await b.export_pick(16, 128);
    assert.equal(b.view.getUint32(128, true), 3);
    assert.deepEqual(b.freed, [[64, 5, 1]]);
  }
  assert.deepEqual(seen[0], [{ name: 'hello', count: 7 }, 1234567890123n]);
  assert.deepEqual(seen[1], seen[0]);
  const [generated, rewritten] = both(pick, (s) => s.length);
  await generated.export_pick(16, 128);
  await rewritten.export_pick(16, 128);
  assert.ok(
    rewritten.mem.reads < generated.mem.reads,
    `${rewritten.mem.reads} reads of the buffer`,
  );
  assert.equal(rewritten.debugged.length, 0);
});

test('a plugin that returns a promise is awaited, and its rejection is its error', async () => {
  const later = (v) => new Promise((resolve) => setTimeout(() => resolve(v), 1));
  const refuse = (s) => Promise.reject(new Error(`no ${s}`));
  for (const b of both(() => later('abcd'), (s) => later(s.toUpperCase()))) {
    await b.export_pick(16, 128);
    assert.equal(b.view.getUint32(128, true), 4);
    assert.deepEqual(await b.export_check(96, 7, 200), { tag: 'ok', val: 'CHECKED' });
    assert.equal(b.view.getUint8(200), 0);
  }
  for (const b of both(() => 'x', refuse)) {
    assert.deepEqual(await b.export_check(96, 7, 200), { tag: 'err', val: 'Error: no checked' });
    assert.equal(b.view.getUint8(200), 1);
  }
  const thrown = (s) => { throw new Error(`not ${s}`); };
  for (const b of both(() => 'x', thrown)) {
    assert.deepEqual(await b.export_check(96, 7, 200), { tag: 'err', val: 'Error: not checked' });
  }
});

test('code of another shape is left as generated', () => {
  const other = 'function export_x(arg0) {\n  return plugin(arg0);\n}\n';
  assert.deepEqual(tightenBindings(other), { src: other, exports: 0 });
});

// A resource of the host with a method, and an export borrowing two of them, in the shapes
// componentize-js 0.23.0 generates for `hestia:plugin@0.4.0`'s `authorize`.
const BORROWING = `
const _debugLog = (...args) => { debugged.push(args); };
let curResourceBorrows = [];
const symbolRscHandle = Symbol('handle');
const finalizationRegistry_import$types$res = new FinalizationRegistry((handle) => {
  $drop$res(handle);
});

class import_types$Res {
  name() {
    function helper(arg0) {
      
      var handle0 = arg0[symbolRscHandle];
      finalizationRegistry_import$types$res.unregister(arg0);
      _debugLog('[Instruction::CallWasm] enter', {
        funcName: '[method]res.name',
        paramCount: 1,
      });
      let ret;
      ret = $method$name(handle0);
      return ret;
    }
    return helper(this);
  }
}

async function export_authorize(arg0, arg1, arg2) {
  var handle1 = arg0;
  
  var rsc0 = new.target === import_types$Res ? this : Object.create(import_types$Res.prototype);
  Object.defineProperty(rsc0, symbolRscHandle, { writable: true, value: handle1});
  finalizationRegistry_import$types$res.register(rsc0, handle1, rsc0);
  curResourceBorrows.push({ rsc: rsc0, drop: $drop$res });
  var handle3 = arg1;
  
  var rsc2 = new.target === import_types$Res ? this : Object.create(import_types$Res.prototype);
  Object.defineProperty(rsc2, symbolRscHandle, { writable: true, value: handle3});
  finalizationRegistry_import$types$res.register(rsc2, handle3, rsc2);
  curResourceBorrows.push({ rsc: rsc2, drop: $drop$res });
  _debugLog(' [Instruction::CallInterface] (sync, @ enter)');
  let ret;
  
  const borrows4 = curResourceBorrows;
  curResourceBorrows= [];
  try {
    ret = await authorize(rsc0, rsc2);
  } finally {
    for (const entry of borrows4) {
      const rsc = entry.rsc ?? entry;
      if (entry.drop) {
        if (rsc[symbolRscHandle]) {
          entry.drop(rsc[symbolRscHandle]);
        }
      }
      rsc[symbolRscHandle] = undefined;
    }
  }
  lowered.push(ret);
  return;
}
`;

// The bindings over a host whose resources answer `name-<handle>`, recording each call.
function loadBorrowing(src, authorize) {
  const host = { calls: [], registered: 0, unregistered: 0, lowered: [], debugged: [] };
  class FinalizationRegistry {
    register() { host.registered++; }
    unregister() { host.unregistered++; }
  }
  const make = new Function(
    'FinalizationRegistry', '$method$name', '$drop$res', 'authorize', 'lowered', 'debugged',
    `${src}\nreturn export_authorize;`,
  );
  host.export_authorize = make(
    FinalizationRegistry,
    (handle) => (host.calls.push(['name', handle]), `name-${handle}`),
    (handle) => host.calls.push(['drop', handle]),
    authorize,
    host.lowered,
    host.debugged,
  );
  return host;
}

test('borrowed resources: the same handles, methods and drops, without finalization', async () => {
  const { src, exports } = tightenBindings(BORROWING);
  assert.equal(exports, 1);
  assert.doesNotMatch(src, /\.register\(|\.unregister\(|defineProperty|_debugLog\(/);
  const policy = (a, b) => ({ tag: 'allow', val: [a.name(), b.name()] });
  const hosts = [BORROWING, src].map((s) => loadBorrowing(s, policy));
  for (const host of hosts) await host.export_authorize(3, 5, 0);
  const [generated, rewritten] = hosts;
  assert.deepEqual(rewritten.lowered, [{ tag: 'allow', val: ['name-3', 'name-5'] }]);
  assert.deepEqual(rewritten.lowered, generated.lowered);
  const calls = [['name', 3], ['name', 5], ['drop', 3], ['drop', 5]];
  assert.deepEqual(generated.calls, calls);
  assert.deepEqual(rewritten.calls, calls);
  assert.deepEqual([generated.registered, generated.unregistered], [2, 2]);
  assert.deepEqual([rewritten.registered, rewritten.unregistered], [0, 0]);
  assert.equal(rewritten.debugged.length, 0);
});

test('borrowed resources are dropped when the plugin throws or its promise rejects', async () => {
  const throws = () => { throw new Error('no'); };
  const rejects = async () => { throw new Error('later'); };
  for (const [policy, message] of [[throws, 'no'], [rejects, 'later']]) {
    const host = loadBorrowing(tightenBindings(BORROWING).src, policy);
    await assert.rejects(host.export_authorize(7, 9, 0), { message });
    assert.deepEqual(host.calls, [['drop', 7], ['drop', 9]]);
  }
  const later = (a) => new Promise((resolve) => setTimeout(() => resolve({ tag: a.name() }), 1));
  const host = loadBorrowing(tightenBindings(BORROWING).src, later);
  await host.export_authorize(2, 4, 0);
  assert.deepEqual(host.lowered, [{ tag: 'name-2' }]);
  assert.deepEqual(host.calls, [['name', 2], ['drop', 2], ['drop', 4]]);
});
