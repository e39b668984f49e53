// store.export(filter) and EventStore.import(name, source): NDJSON, one
// event per line, for access and portability requests. Both stream: an
// export reads the store a page (1,000 events) at a time as the stream is
// read; an import writes a few thousand lines per transaction as they
// arrive. The line checks and the writes are the core's
// (src/portability.rs).

const LINES_PER_WRITE = 2000;

/** The events of `store` matching `filter`, as a ReadableStream of NDJSON bytes. */
export function exportEvents(store, filter) {
  const events = store.events(filter)[Symbol.asyncIterator]();
  const encoder = new TextEncoder();
  return new ReadableStream({
    async pull(controller) {
      let text = "";
      for (let n = 0; n < 1000; n++) {
        const { value, done } = await events.next();
        if (done) {
          if (text) controller.enqueue(encoder.encode(text));
          controller.close();
          return;
        }
        text += JSON.stringify(value) + "\n";
      }
      controller.enqueue(encoder.encode(text));
    },
    async cancel() {
      await events.return?.();
    },
  });
}

/** The lines of `source`: a ReadableStream (bytes or strings), an (async) iterable of chunks, a string, or a Blob/Response. */
async function* lines(source) {
  if (typeof source === "string") source = [source];
  else if (typeof source?.stream === "function") source = source.stream();
  else if (source?.body && typeof source.body.getReader === "function") source = source.body;
  const decoder = new TextDecoder("utf-8", { fatal: true });
  let rest = "";
  const chunks = typeof source?.getReader === "function" ? readAll(source) : source;
  for await (const chunk of chunks) {
    rest += typeof chunk === "string" ? chunk : decoder.decode(chunk, { stream: true });
    const cut = rest.lastIndexOf("\n");
    if (cut < 0) continue;
    yield* rest.slice(0, cut).split("\n");
    rest = rest.slice(cut + 1);
  }
  rest += decoder.decode();
  if (rest) yield rest;
}

async function* readAll(stream) {
  const reader = stream.getReader();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      yield value;
    }
  } finally {
    reader.releaseLock();
  }
}

/**
 * Imports NDJSON (as `store.export` writes it) into the new store `name`;
 * resolves to the open store. All or nothing: any bad line rejects with
 * INVALID_ARGUMENT naming the line, and the store is deleted again.
 */
export async function importEvents(EventStore, name, source, options) {
  const store = await EventStore.open(name, options);
  if ((await store.count()) > 0) {
    store.close();
    throw Object.assign(new Error(`import needs a new store: ${JSON.stringify(name)} already holds events`), { code: "INVALID_ARGUMENT" });
  }
  try {
    await store.__importMark(true);
    let batch = [];
    let first = 1;
    let line = 0;
    for await (const text of lines(source)) {
      line += 1;
      batch.push(text);
      if (batch.length === LINES_PER_WRITE) {
        await store.__importLines(batch.join("\n"), first);
        first = line + 1;
        batch = [];
      }
    }
    if (batch.length > 0) await store.__importLines(batch.join("\n"), first);
    await store.__importMark(false);
    return store;
  } catch (e) {
    store.close();
    await EventStore.delete(name);
    if (e instanceof TypeError && /decode/i.test(e.message)) {
      throw Object.assign(new Error(`import: the source is not UTF-8 text (${e.message})`), { code: "INVALID_ARGUMENT" });
    }
    throw e;
  }
}
