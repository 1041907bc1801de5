// The official OpenAI Node SDK pointed at a running tailor (started by tests/run-all.sh).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI, { toFile } from 'openai';

const BASE = process.env.TAILOR_BASE_URL;
const ADMIN = process.env.TAILOR_ADMIN_URL;
// the simulator's wire format for this run (x-mock-format: spaced, crlf, ...; empty = OpenAI's)
const FORMAT = process.env.TAILOR_MOCK_FORMAT ? { 'x-mock-format': process.env.TAILOR_MOCK_FORMAT } : {};
// how the simulated reply opens (the `unicode` format puts non-ASCII text there, escaped by `spaced`)
const OPENING = (process.env.TAILOR_MOCK_FORMAT || '').includes('unicode') ? 'Voilà, 🚀 a' : 'This is a';
const client = new OpenAI({ baseURL: BASE, apiKey: 'sk-client-key', maxRetries: 0, defaultHeaders: FORMAT });
const messages = [{ role: 'user', content: 'Hello from the Node SDK' }];
const tools = [{ type: 'function', function: { name: 'lookup_order', parameters: { type: 'object', properties: { query: { type: 'string' } } } } }];

// Sum of the series of `name` whose labels include `labels`.
async function counter(name, labels) {
  const text = await (await fetch(`${ADMIN}/metrics`)).text();
  let total = 0;
  for (const line of text.split('\n')) {
    if (line.startsWith('#') || !line.startsWith(name + '{')) continue;
    const [series, value] = [line.slice(0, line.lastIndexOf(' ')), line.slice(line.lastIndexOf(' ') + 1)];
    const have = Object.fromEntries(series.slice(name.length + 1, -1).split(',').map((kv) => kv.split('=')));
    if (Object.entries(labels).every(([k, v]) => have[k] === `"${v}"`)) total += Number(value);
  }
  return total;
}

test('chat, non-streaming, with tailor headers', async () => {
  const { data, response } = await client.chat.completions.create({ model: 'gpt-4o', messages }).withResponse();
  assert.equal(response.headers.get('x-tailor-route'), 'default');
  assert.equal(response.headers.get('x-tailor-model'), 'gpt-4o');
  assert.match(data.choices[0].message.content, /simulated reply/);
  assert.equal(data.usage.completion_tokens, 12);
});

test('stream without include_usage: choices[0] on every chunk, still metered', async () => {
  const before = await counter('tailor_tokens_total', { route: 'default', model: 'gpt-4o', type: 'output' });
  let text = '';
  const stream = await client.chat.completions.create({ model: 'gpt-4o', messages, stream: true });
  for await (const chunk of stream) {
    text += chunk.choices[0].delta.content ?? '';
  }
  assert.ok(text.startsWith(`${OPENING} simulated reply`), text);
  const after = await counter('tailor_tokens_total', { route: 'default', model: 'gpt-4o', type: 'output' });
  assert.equal(after - before, 12);
});

test('stream with include_usage ends with the usage chunk', async () => {
  const chunks = [];
  const stream = await client.chat.completions.create({ model: 'gpt-4o', messages, stream: true, stream_options: { include_usage: true } });
  for await (const c of stream) chunks.push(c);
  const last = chunks.at(-1);
  assert.deepEqual(last.choices, []);
  assert.equal(last.usage.completion_tokens, 12);
});

test('tool calls, streamed and not', async () => {
  const c = await client.chat.completions.create({ model: 'gpt-4o', messages, tools });
  const call = c.choices[0].message.tool_calls[0];
  assert.equal(call.function.name, 'lookup_order');
  let args = '';
  const stream = await client.chat.completions.create({ model: 'gpt-4o', messages, tools, stream: true });
  for await (const chunk of stream) {
    for (const tc of chunk.choices[0].delta.tool_calls ?? []) args += tc.function?.arguments ?? '';
  }
  assert.deepEqual(JSON.parse(args), JSON.parse(call.function.arguments));
});

test('models.list', async () => {
  const ids = [];
  for await (const m of client.models.list()) ids.push(m.id);
  assert.ok(ids.includes('gpt-4o') && ids.includes('sticky'));
});

test('429 is a RateLimitError, 401 an AuthenticationError', async () => {
  await assert.rejects(
    client.chat.completions.create({ model: 'gpt-4o', messages }, { headers: { 'x-mock-status': '429' } }),
    (e) => e instanceof OpenAI.RateLimitError && e.status === 429 && e.headers.get('retry-after') === '1',
  );
  await assert.rejects(
    client.chat.completions.create({ model: 'gpt-4o', messages }, { headers: { 'x-mock-status': '401' } }),
    (e) => e instanceof OpenAI.AuthenticationError,
  );
  await assert.rejects(
    client.chat.completions.create({ model: 'gpt-9', messages }),
    (e) => e instanceof OpenAI.NotFoundError && e.code === 'model_not_found',
  );
});

test('embeddings', async () => {
  const r = await client.embeddings.create({ model: 'text-embedding-3-small', input: ['a', 'b'] });
  assert.equal(r.data.length, 2);
  assert.equal(r.data[0].embedding.length, 16);
  assert.ok(r.usage.prompt_tokens > 0);
});

test('responses API', async () => {
  const r = await client.responses.create({ model: 'gpt-4o', input: 'hi' });
  assert.ok(r.output_text.startsWith(`${OPENING} simulated reply`), r.output_text);
  const types = [];
  const stream = await client.responses.create({ model: 'gpt-4o', input: 'hi', stream: true });
  for await (const e of stream) types.push(e.type);
  assert.equal(types.at(-1), 'response.completed');
});

test('a stream broken mid-way raises', async () => {
  let text = '';
  await assert.rejects(async () => {
    const stream = await client.chat.completions.create({ model: 'gpt-4o', messages, stream: true }, { headers: { 'x-mock-fail-after': '4' } });
    for await (const chunk of stream) text += chunk.choices[0].delta.content ?? '';
  });
  assert.ok(text.startsWith(OPENING), text);
});

test('files, batches and moderations pass through to the upstream', async () => {
  const lines = [0, 1].map((i) => JSON.stringify({ custom_id: `n${i}`, method: 'POST', url: '/v1/chat/completions',
    body: { model: 'gpt-4o', messages: [{ role: 'user', content: `q${i}` }] } }) + '\n').join('');
  const uploaded = await client.files.create({ file: await toFile(Buffer.from(lines), 'node.jsonl'), purpose: 'batch' });
  assert.equal(uploaded.bytes, Buffer.byteLength(lines));
  const ids = [];
  for await (const f of client.files.list()) ids.push(f.id);
  assert.ok(ids.includes(uploaded.id));
  assert.equal((await client.files.retrieve(uploaded.id)).filename, 'node.jsonl');
  assert.equal(await (await client.files.content(uploaded.id)).text(), lines);
  const batch = await client.batches.create({ input_file_id: uploaded.id, endpoint: '/v1/chat/completions', completion_window: '24h' });
  const done = await client.batches.retrieve(batch.id);
  assert.equal(done.status, 'completed');
  assert.equal(done.request_counts.total, 2);
  const mod = await client.moderations.create({ model: 'omni-moderation-latest', input: 'violence-test' });
  assert.equal(mod.results[0].flagged, true);
  assert.ok((await client.files.delete(uploaded.id)).deleted);
  assert.ok(await counter('tailor_requests_total', { route: 'passthrough', endpoint: 'files', code: '200' }) >= 5);
  assert.ok(await counter('tailor_requests_total', { route: 'passthrough', endpoint: 'moderations' }) >= 1);
});
