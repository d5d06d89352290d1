/**
 * A static file server for the built playground on 127.0.0.1, with the cross-origin isolation
 * headers (COOP same-origin, COEP require-corp) that SharedArrayBuffer, and so wasm threads, need.
 */
import { createReadStream, existsSync, statSync } from 'node:fs';
import { extname, join, normalize, resolve, sep } from 'node:path';
import Fastify, { type FastifyInstance } from 'fastify';

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
  '.txt': 'text/plain; charset=utf-8',
  '.bin': 'application/octet-stream',
  '.wasm': 'application/wasm',
  '.png': 'image/png',
  '.svg': 'image/svg+xml',
};

/** Headers on every response: cross-origin isolation, and no caching so a rebuilt site is picked up. */
export const ISOLATION_HEADERS: Readonly<Record<string, string>> = Object.freeze({
  'cross-origin-opener-policy': 'same-origin',
  'cross-origin-embedder-policy': 'require-corp',
  'cross-origin-resource-policy': 'same-origin',
  'x-content-type-options': 'nosniff',
  'cache-control': 'no-cache',
});

/** A running playground server. */
export interface PlaygroundServer {
  url: string;
  app: FastifyInstance;
  close(): Promise<void>;
}

/** Serve the static site in `dir` on host:port (port 0 = any free port). */
export async function servePlayground(dir: string, opts: { port?: number; host?: string } = {}): Promise<PlaygroundServer> {
  const root = resolve(dir);
  // Close drops idle keep-alive connections too, so stopping never waits on a browser's open sockets.
  const app = Fastify({ logger: false, forceCloseConnections: true });
  app.addHook('onSend', async (_req, reply, payload) => {
    for (const [k, v] of Object.entries(ISOLATION_HEADERS)) reply.header(k, v);
    return payload;
  });
  app.get('/*', async (req, reply) => {
    let urlPath: string;
    try {
      urlPath = decodeURIComponent(req.url.split('?')[0].split('#')[0]);
    } catch {
      return reply.code(400).type('text/plain').send('bad request: malformed percent-encoding in the path\n');
    }
    const rel = urlPath.endsWith('/') ? `${urlPath}index.html` : urlPath;
    const file = normalize(join(root, rel));
    // Never serve outside the site directory (../ in the path).
    if (file !== root && !file.startsWith(root + sep)) return reply.code(403).type('text/plain').send('forbidden\n');
    if (!existsSync(file) || !statSync(file).isFile()) return reply.code(404).type('text/plain').send(`not found: ${urlPath}\n`);
    reply.type(TYPES[extname(file)] ?? 'application/octet-stream');
    return reply.send(createReadStream(file));
  });
  const host = opts.host ?? '127.0.0.1';
  await app.listen({ port: opts.port ?? 0, host });
  const addr = app.server.address();
  const port = typeof addr === 'object' && addr ? addr.port : opts.port;
  return { url: `http://${host}:${port}/`, app, close: () => app.close() };
}
