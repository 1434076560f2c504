// Typings for mpchat.js (the mpchat mini program SDK). Keep next to mpchat.js.

/** A wx.request-like function (injectable for tests; defaults to wx.request). */
export type RequestFn = (option: any) => any;
/** A wx.requestPayment-like function (injectable for tests; defaults to wx.requestPayment). */
export type RequestPaymentFn = (option: {
  timeStamp: string;
  nonceStr: string;
  package: string;
  signType?: 'MD5' | 'HMAC-SHA256' | 'RSA';
  paySign: string;
  success?: (res: any) => void;
  fail?: (err: { errMsg: string }) => void;
}) => any;
/** A wx.login-like function (defaults to wx.login). */
export type LoginFn = (option: { success?: (res: { code: string }) => void; fail?: (err: any) => void }) => any;

export interface StorageLike {
  getStorageSync?(key: string): any;
  setStorageSync?(key: string, value: any): void;
  removeStorageSync?(key: string): void;
}

/** Login through WeChat Cloud Run's `wx.cloud.callContainer` (the app called `wx.cloud.init()`). */
export interface CloudOptions {
  /** The Cloud Run environment id (微信云托管环境 ID). */
  env: string;
  /** The service that logs users in: public access off, `MPCHAT_CLOUDRUN_HEADER_AUTH=login`. */
  service: string;
  /** `wx.cloud.callContainer` by default (injectable, for tests or to wrap it). */
  callContainer?: (option: {
    config: { env: string };
    path: string;
    method: 'POST';
    header: Record<string, string>;
    data: { code: string };
    success: (res: { statusCode: number; header?: Record<string, string>; data: any }) => void;
    fail: (err: { errMsg?: string }) => void;
  }) => void;
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
  /** How many times a 429/503 before `start` is retried; default 2. A 429 whose `retry_after`
   * exceeds `maxRetryDelay` is reported at once (a sooner retry would be refused again). */
  maxRetries?: number;

  // Resume: after `start`, a cut stream is followed again with
  // `GET /api/v1/messages/{id}/events?after=<last seq>`; the caller sees one answer.
  /** Reconnections in a row that bring no new event before the chat ends with `interrupted`;
   * default 6. `0` turns resume off (a cut after `start` is reported as `interrupted`). */
  resumeAttempts?: number;
  /** Seconds before the second reconnection (the first is immediate); doubled each time; default 1. */
  resumeDelay?: number;
  /** Cap, in seconds, on the wait between reconnections (a server's `retry_after` included); default 10. */
  resumeMaxDelay?: number;
  /** Seconds without a byte (the server's `ping` keep-alives count) after which a stream is taken
   * as dead and resumed; default 30; `0` turns the watch off. Catches connections a device dropped
   * without calling `fail` (iOS). */
  idleTimeout?: number;
  /** Seconds in the background after which the app's request is taken as cut (WeChat kills a hidden
   * app's requests after about 5 s); on `wx.onAppShow` the SDK then resumes at once; default 5.
   * A cut noticed while the app is hidden waits for `onAppShow` to reconnect. */
  backgroundTimeout?: number;
  /** Called whenever the SDK learns the caller's quota: a chat's `done` carried one (`source:
   * 'chat'`), a chat was refused with 402 `quota_exceeded` (`'exceeded'`: the quota as `/me` has
   * it then, with `exceeded: true`; the chat's `onError` gets the error as well), `buy()` ended
   * (`'purchase'`), `me()` or `order()` answered (`'me'`, `'order'`). Show the balance from it. */
  onQuota?: (quota: Quota, info: QuotaInfo) => void;

  // Buying: after wx.requestPayment succeeds, `buy()` asks for the order at once, then after
  // waits doubling from `payPollDelay` up to `payPollMaxDelay`, until it is `paid` or `closed`,
  // for at most `payPollTimeout` seconds in all (then it resolves `pending`).
  /** Seconds before the second query of the order (the first is immediate); default 1. */
  payPollDelay?: number;
  /** Cap, in seconds, on the wait between two queries of the order; default 5. */
  payPollMaxDelay?: number;
  /** Seconds after the payment within which the order is queried; default 30. A query still
   * unanswered then (a stalled connection) is given up `payPollMaxDelay` later: `buy()` settles
   * within `payPollTimeout + payPollMaxDelay` of the payment. */
  payPollTimeout?: number;
  request?: RequestFn;
  login?: LoginFn;
  /** WeChat Cloud Run: log in through `wx.cloud.callContainer` (no `wx.login`), then send
   * everything else, streamed, to `baseUrl` with the session token (docs/deployment.md). */
  cloud?: CloudOptions;
  /** wx.getRecorderManager, wx.getFileSystemManager, wx.createInnerAudioContext and
   * wx.env.USER_DATA_PATH, for `voice()` and `speak()` (injectable for tests). */
  getRecorderManager?: () => any;
  getFileSystemManager?: () => any;
  createInnerAudioContext?: () => any;
  userDataPath?: string;
  requestPayment?: RequestPaymentFn;
  canIUse?: (schema: string) => boolean;
  storage?: StorageLike;
  /** wx.onAppShow / wx.onAppHide (injectable for tests). */
  onAppShow?: (listener: (res?: any) => void) => void;
  onAppHide?: (listener: (res?: any) => void) => void;
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
  /** The new piece of the answer; with `reset`, the whole answer so far. */
  text: string;
  /** The whole answer so far. */
  full: string;
  /** Set when a `snapshot` replaced the answer and no `onSnapshot` is given: replace what is
   * shown with `text` (== `full`) instead of appending it. Consumers that show `full` need
   * nothing special. */
  reset?: boolean;
}
export interface SnapshotEvent {
  /** The whole answer so far: replaces everything shown for it (a resumed stream whose exact
   * events were no longer kept). Later `onDelta`s append to it. */
  text: string;
}
export interface ReasoningEvent {
  /** The new piece of the model's thinking: show it apart (folded), never as the answer. */
  text: string;
  /** All the thinking so far. */
  full: string;
}
export interface ReconnectInfo {
  /** 1 for the first reconnection since the last new event. */
  attempt: number;
  /** Seconds the SDK waits before reconnecting. */
  delay: number;
  /** `network` (request failed), `cut` (ended without `done`), `idle` (silent stream),
   * `background` (the app was hidden), `status` (the resume request got an HTTP error). */
  reason: string;
}
export interface RetractEvent { type: 'retract'; reason: string }
export interface Usage { prompt_tokens: number; completion_tokens: number }
export interface DoneEvent {
  finish_reason: string;
  usage?: Usage;
  /** The caller's quota after this answer (absent from servers older than quotas). */
  quota?: Quota;
  timings?: Record<string, number>;
  /** The whole answer. */
  text: string;
  /** The model's whole thinking ('' for other models). */
  reasoning: string;
}
export interface ChatError {
  /** A code of API.md (`rate_limited`, `busy`, `content_rejected`, ...) or a client-side one:
   * `network_error` (failed before `start`), `interrupted` (the connection ended before `done` and
   * could not be resumed: before `start`, after `resumeAttempts` reconnections without progress, or
   * the resume request was refused, then `status`/`cause` say how), `bad_response`, `login_failed`. */
  code: string;
  message: string;
  /** Seconds, when the server advised a wait. */
  retry_after?: number;
  /** HTTP status, when the error came with one. */
  status?: number;
  /** True when the local word list rejected the content (nothing was sent). */
  local?: boolean;
  /** With `interrupted` from a refused resume request: the server's code, e.g. `not_found`. */
  cause?: string;
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
  /** A resumed stream replaced the answer so far with `ev.text`: show it instead of what was
   * shown. Without this callback the SDK calls `onDelta` with `reset: true`. */
  onSnapshot?(ev: SnapshotEvent): void;
  /** A reasoning model's thinking (not part of the answer): show it apart, folded. */
  onReasoning?(ev: ReasoningEvent): void;
  /** Remove everything shown for this answer. */
  onRetract?(ev: RetractEvent): void;
  onDone?(ev: DoneEvent): void;
  onError?(err: ChatError): void;
  /** A 429/503 came before `start`; the SDK waits `delay` seconds and tries again. */
  onRetry?(info: RetryInfo): void;
  /** The stream was cut after `start`; the SDK reconnects after `delay` seconds and goes on
   * from the last event it delivered (show e.g. "重新连接中…"). */
  onReconnect?(info: ReconnectInfo): void;
  /** A resumed stream answered: the answer goes on (clear the "reconnecting" state). */
  onReconnected?(info: { attempt: number }): void;
}

export type AudioFormat = 'mp3' | 'aac' | 'wav' | 'm4a' | 'pcm';

export interface VoiceOptions extends Omit<ChatOptions, 'content'> {
  /** A recording already made (then nothing is recorded); else `voice()` records until `stop()`. */
  audio?: ArrayBuffer;
  /** The recorder's format, and the recording's Content-Type; default `mp3`. */
  format?: AudioFormat;
  /** What the service heard: comes before `onStart`. */
  onTranscript?(ev: { text: string }): void;
}

export interface VoiceHandle extends Omit<ChatHandle, 'reasoning'> {
  /** End the recording: it is uploaded and answered. */
  stop(): void;
}

export interface SpeakOptions {
  /** Sentence `index` (0-based) starts playing. */
  onSentence?(ev: { index: number }): void;
  /** Every sentence was played. */
  onDone?(): void;
  onError?(err: ChatError): void;
}

export interface ChatHandle {
  /** The user's stop: no callback fires afterwards, and the SDK sends
   * `POST /api/v1/messages/{id}/cancel` so the service stops the answer (stored `truncated`); a
   * closed connection alone no longer stops it. Called before `start`, the SDK reads the response
   * on, unseen, until `start` names the message, then cancels it.
   * `abort({cancel: false})` only stops listening (e.g. the page is left): the answer goes on and
   * is stored, and the conversation's history shows it. */
  abort(options?: { cancel?: boolean }): void;
  /** The answer received so far. */
  readonly text: string;
  /** The reasoning received so far. */
  readonly reasoning: string;
  /** The answer's id once `start` arrived, else null. */
  readonly messageId: string | null;
}

export interface Page<T> { items: T[]; next: string | null }
export interface Conversation { id: string; title: string; updated_at: string; message_count: number }
export interface Message {
  id: string;
  role: 'user' | 'assistant' | 'system';
  content: string;
  status: string;
  created_at: string;
  /** The model sees this message only through the summary of earlier turns. */
  summarized?: boolean;
}
export interface PageQuery { limit?: number; before?: string }
export interface Meta {
  label: string;
  ai_generated: boolean;
  model_name: string;
  /** The operator's generative AI filing (备案) number, to be shown with the label. */
  filing_number?: string | null;
  /** The model's name as filed, shown with the filing number. */
  filed_model_name?: string | null;
}
/**
 * The caller's free allowance and credits (API.md "Quotas and credits"). With quotas off:
 * `{enabled: false}` and nothing else.
 */
export interface Quota {
  /** False when the service has no quotas (everything is free); absent in some `done` events. */
  enabled?: boolean;
  /** Units left: free units left + credits. */
  remaining?: number;
  /** Free units left in this period. */
  free_remaining?: number;
  /** Seconds until the free allowance resets. */
  reset_s?: number;
  /** Purchased (or granted) credits. */
  credits?: number;
  /** Only from `onQuota` after a 402: a chat was refused, what is left (if anything) does not
   * cover one answer. Offer to buy credits (`plans()`, `buy()`). */
  exceeded?: boolean;
}
/** Why `onQuota` was called. */
export type QuotaSource = 'chat' | 'exceeded' | 'purchase' | 'me' | 'order';
export interface QuotaInfo { source: QuotaSource }
export interface Me {
  user_id: string;
  rate_limit: { limit: number; window_s: number; remaining: number; reset_s: number };
  quota: Quota;
}
/** A credit pack the operator sells. */
export interface Plan {
  id: string;
  title: string;
  /** Price in fen (1/100 CNY). */
  price_fen: number;
  /** Credits it adds. */
  credits: number;
}
export interface Order {
  order_id: string;
  /** `pending` until WeChat Pay confirms; `closed`: expired or failed, never paid. */
  status: 'pending' | 'paid' | 'closed';
  plan: string;
  title: string;
  price_fen: number;
  credits: number;
  created_at: string;
  paid_at: string | null;
}
/** `GET /api/v1/orders/{id}`: the order and the caller's quota. */
export interface OrderStatus extends Order { quota: Quota }
export interface BuyResult {
  /** `paid`: the credits are in (`quota` shows them). `closed`: the order ended unpaid.
   * `pending`: paid on the phone but not confirmed within `payPollTimeout` (the credits come when
   * WeChat Pay's notification does; ask `order(order_id)` or `me()` later). `cancelled`: the user
   * closed the payment sheet (`requestPayment:fail cancel`); nothing was paid. */
  status: 'paid' | 'closed' | 'pending' | 'cancelled';
  order_id: string;
  /** The order as last seen (without `quota` and `payment`). */
  order: Order;
  /** The caller's quota from the last query of the order (absent when `cancelled`). */
  quota?: Quota;
}

export interface Meta { label: string; ai_generated: boolean; model_name: string; filing_number?: string | null }

export interface Client {
  /** Log in now (wx.login, or the given code, e.g. a dev code); otherwise the first call does. */
  login(code?: string): Promise<void>;
  /** Forget the stored token. */
  logout(): void;
  /** Whether an unexpired token is stored. */
  hasSession(): boolean;
  chat(options: ChatOptions): ChatHandle;
  /** Hold-to-talk: records (wx.getRecorderManager) until `stop()`, uploads the recording to
   * `POST /api/v1/voice`, then streams the answer as `chat()` does, after `onTranscript`. */
  voice(options: VoiceOptions): VoiceHandle;
  /** Read an answer aloud sentence by sentence, also while it still streams. */
  speak(messageId: string, options?: SpeakOptions): { stop(): void };
  listConversations(query?: PageQuery): Promise<Page<Conversation>>;
  listMessages(conversationId: string, query?: PageQuery): Promise<Page<Message>>;
  deleteConversation(conversationId: string): Promise<void>;
  deleteMyData(): Promise<void>;
  /** The caller: user id, rate limit and quota (also handed to `onQuota`). */
  me(): Promise<Me>;
  /** The credit packs on sale (none while payments are off). */
  plans(): Promise<Plan[]>;
  /**
   * Buy a credit pack: `POST /api/v1/orders`, `wx.requestPayment` with the parameters it returns,
   * then `GET /api/v1/orders/{id}` until `paid` or `closed` (bounded: `payPollTimeout`).
   * Resolves with the outcome, `cancelled` included; rejects (`MpchatError`) when the order cannot
   * be made (the server's code: `not_found` for an unknown plan or payments off, `rate_limited`,
   * `service_unavailable`, ...; or `network_error`), when `wx.requestPayment` fails otherwise than
   * by the user's cancel (`payment_failed`, with `orderId`), or when a query of the order is
   * refused (not for passing failures, which are retried).
   */
  buy(planId: string): Promise<BuyResult>;
  /** One query of an order (e.g. one `buy()` left `pending`); its quota goes to `onQuota`. */
  order(orderId: string): Promise<OrderStatus>;
  meta(): Promise<Meta>;
}

/** Errors rejected by the promise-returning calls. */
export interface MpchatError extends Error {
  code: string;
  status?: number;
  retryAfter?: number;
  /** With `payment_failed`: the order that was made (still `pending`; it expires unpaid). */
  orderId?: string;
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
