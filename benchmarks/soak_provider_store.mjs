// Preloaded into the soak's oidc-provider (`node --import`, through NODE_OPTIONS; see benchmarks/soak.py).
//
// oidc-provider keeps grants, sessions and tokens in an in-memory LRU of 1,000 entries
// (lib/adapters/memory_adapter.js, `createStorage`). A login leaves about half a dozen entries and
// each refresh two more, so past a couple of hundred users the provider forgets refresh tokens and
// answers `invalid_grant` ("grant request is invalid"): the soak would measure the test provider,
// not the middleware. Every MemoryAdapter here reads and writes one LRU with room for all of them
// instead (entries still expire with their tokens). Written for oidc-provider 9 (provider/package-lock.json).
import MemoryAdapter from '../provider/node_modules/oidc-provider/lib/adapters/memory_adapter.js';
import LRU from '../provider/node_modules/oidc-provider/lib/helpers/lru.js';

const roomy = new LRU({ maxSize: 10_000_000 });
const described = Object.getOwnPropertyDescriptor(MemoryAdapter.prototype, 'storage');
if (described?.get === undefined) {
  throw new Error('oidc-provider MemoryAdapter has no `storage` getter: update benchmarks/soak_provider_store.mjs');
}
Object.defineProperty(MemoryAdapter.prototype, 'storage', { get: () => roomy, configurable: true });
