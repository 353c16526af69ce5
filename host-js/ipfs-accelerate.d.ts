// Types for host-js/ipfs-accelerate.js.

export class AccelerateError extends Error {
  constructor(name: string, message: string);
}
export class WorkerCrashedError extends AccelerateError {}
export class ServiceWorkerError extends AccelerateError {}

export interface IPFSAccelerateConfig {
  /** Service-worker script URL, or false to run without caching. */
  serviceWorker?: string | false;
  /** Engine worker script URL. */
  workerUrl?: string;
  serviceWorkerTimeoutMs?: number;
}

export interface AdapterSummary {
  vendor: string;
  architecture: string;
  description: string;
  isFallbackAdapter: boolean;
  shaderF16: boolean;
  subgroups: boolean;
  maxStorageBufferBindingSize: number;
  maxBufferSize: number;
}

export interface Capabilities {
  webgpu: { available: boolean; reason?: string; adapter?: AdapterSummary };
  wasmSimd: boolean;
  crossOriginIsolated: boolean;
  hardwareConcurrency: number;
  serviceWorker: { controlled: boolean; scope: string | null };
  webnn: boolean;
  deviceMemoryGB: number | null;
  storage: StorageEstimate | null;
}

export interface FetchedFile {
  url: string;
  bytes: number;
  sha256: string;
  source: 'store' | 'network';
}

export class IPFSAccelerate {
  constructor(config?: IPFSAccelerateConfig);
  readonly config: Required<IPFSAccelerateConfig>;
  serviceWorker: { controlled: boolean; scope: string | null };
  ready(): Promise<IPFSAccelerate>;
  getCapabilities(): Promise<Capabilities>;
  fetchFile(url: string): Promise<FetchedFile>;
  terminate(): void;
}
