// Typings for mpchat.js (the mpchat mini program SDK). Keep next to mpchat.js.

/** A wx.request-like function (injectable for tests; defaults to wx.request). */
export type RequestFn = (option: any) => any;
/** A wx.login-like function (defaults to wx.login). */
export type LoginFn = (option: { success?: (res: { code: string }) => void; fail?: (err: any) => void }) => any;

export interface StorageLike {
  getStorageSync?(key: string): any;
  setStorageSync?(key: string, value: any): void;
  removeStorageSync?(key: string): void;
}

export interface ClientOptions {
  /** The service's origin, e.g. `https://chat.example.com` (a legal request domain of the app). */
  baseUrl: string;
  /** Storage key of the session token; default `mpchat_session`. */
  storageKey?: string;
  /** Words rejected locally before anything is sent (compared lower-cased, without spaces). */
  wordList?: string[];
  /** Cap, in seconds, on the wait before retrying a 429/503; default 10. */
  maxRetryDelay?: number;
  /** How many times a 429/503 before `start` is retried; default 2. */
  maxRetries?: number;
  request?: RequestFn;
  login?: LoginFn;
  canIUse?: (schema: string) => boolean;
  storage?: StorageLike;
  setTimeout?: (fn: () => void, ms: number) => any;
  clearTimeout?: (id: any) => void;
  now?: () => number;
}

export interface StartEvent {
  type: 'start';
  conversation_id: string;
  message_id: string;
  model: string;
  ai_generated: boolean;
  /** The visible AI-content notice: show it with the answer. */
  label: string;
}
export interface QueuedEvent { type: 'queued'; position: number }
export interface DeltaEvent {
  /** The new piece of the answer. */
  text: string;
  /** The whole answer so far. */
  full: string;
}
export interface RetractEvent { type: 'retract'; reason: string }
export interface Usage { prompt_tokens: number; completion_tokens: number }
export interface DoneEvent {
  finish_reason: string;
  usage?: Usage;
  quota?: Record<string, unknown>;
  /** The whole answer. */
  text: string;
}
export interface ChatError {
  /** A code of API.md (`rate_limited`, `busy`, `content_rejected`, ...) or a client-side one:
   * `network_error`, `interrupted` (the connection ended before `done`), `bad_response`, `login_failed`. */
  code: string;
  message: string;
  /** Seconds, when the server advised a wait. */
  retry_after?: number;
  /** HTTP status, when the error came with one. */
  status?: number;
  /** True when the local word list rejected the content (nothing was sent). */
  local?: boolean;
}
export interface RetryInfo { code: string; attempt: number; delay: number }

export interface ChatOptions {
  content: string;
  /** Omitted = a new conversation. */
  conversationId?: string;
  /** A prompt profile of the service, e.g. `voice`. */
  profile?: string;
  /** `false` forces one plain JSON response (no streaming). */
  stream?: boolean;
  onStart?(ev: StartEvent): void;
  onQueued?(ev: QueuedEvent): void;
  onDelta?(ev: DeltaEvent): void;
  /** Remove everything shown for this answer. */
  onRetract?(ev: RetractEvent): void;
  onDone?(ev: DoneEvent): void;
  onError?(err: ChatError): void;
  /** A 429/503 came before `start`; the SDK waits `delay` seconds and tries again. */
  onRetry?(info: RetryInfo): void;
}

export interface ChatHandle {
  /** Cancel the request; no callback fires afterwards. */
  abort(): void;
  /** The answer received so far. */
  readonly text: string;
}

export interface Page<T> { items: T[]; next: string | null }
export interface Conversation { id: string; title: string; updated_at: string; message_count: number }
export interface Message {
  id: string;
  role: 'user' | 'assistant' | 'system';
  content: string;
  status: string;
  created_at: string;
}
export interface PageQuery { limit?: number; before?: string }
export interface Meta { label: string; ai_generated: boolean; model_name: string; filing_number?: string | null }

export interface Client {
  /** Log in now (wx.login, or the given code, e.g. a dev code); otherwise the first call does. */
  login(code?: string): Promise<void>;
  /** Forget the stored token. */
  logout(): void;
  /** Whether an unexpired token is stored. */
  hasSession(): boolean;
  chat(options: ChatOptions): ChatHandle;
  listConversations(query?: PageQuery): Promise<Page<Conversation>>;
  listMessages(conversationId: string, query?: PageQuery): Promise<Page<Message>>;
  deleteConversation(conversationId: string): Promise<void>;
  deleteMyData(): Promise<void>;
  me(): Promise<{ rate_limit: Record<string, number>; quota: Record<string, unknown> }>;
  meta(): Promise<Meta>;
}

/** Errors rejected by the promise-returning calls. */
export interface MpchatError extends Error {
  code: string;
  status?: number;
  retryAfter?: number;
}

export function createClient(options: ClientOptions): Client;
export function MpchatError(code: string, message?: string, extra?: Record<string, unknown>): MpchatError;
export function decodeUtf8(bytes: Uint8Array): string;
export function encodeUtf8(text: string): Uint8Array;
export class LineBuffer {
  push(chunk: ArrayBuffer | Uint8Array): string[];
  flush(): string | null;
}
export function parseLine(line: string): any;
