// Types for edge.js, the edge mini-program helper (see README.md).

/** The subset of the wx API the helper calls; defaults to the global `wx`. */
export interface WxApi {
  login(options: any): void;
  request(options: any): any;
  uploadFile(options: any): any;
  connectSocket(options: any): any;
  getStorageSync(key: string): any;
  setStorageSync(key: string, value: any): void;
  removeStorageSync(key: string): void;
}

export interface ClientOptions {
  /** e.g. "https://api.example.com"; a trailing slash is ignored. */
  baseURL: string;
  /** The app's login_path in edge's [[apps]]. Default "/edge/login". */
  loginPath?: string;
  wx?: WxApi;
  /** Milliseconds since the epoch, as Date.now (the default). */
  now?: () => number;
}

export type Query = Record<string, string | number | boolean | Array<string | number | boolean> | null | undefined>;

export interface RequestOptions {
  /** Path, already percent-encoded; parameters belong in `query`. */
  url: string;
  method?: 'GET' | 'POST' | 'PUT' | 'DELETE' | 'PATCH' | 'HEAD' | 'OPTIONS' | string;
  query?: Query;
  /** A string or ArrayBuffer is sent as is; anything else as JSON. */
  data?: string | ArrayBuffer | object;
  header?: Record<string, string>;
  dataType?: string;
}

export interface Response<T = any> {
  statusCode: number;
  /** Parsed JSON when the answer is JSON; edge's refusals are `{code, msg, request_id}`. */
  data: T;
  header?: Record<string, string>;
}

export interface StreamResponse {
  statusCode: number;
  header?: Record<string, string>;
  /** Only for an answer that is not 2xx, whose text never reaches onChunk. */
  data?: any;
}

export interface UploadOptions {
  url: string;
  query?: Query;
  filePath: string;
  name: string;
  /** Not covered by the signature (UNSIGNED-PAYLOAD). */
  formData?: Record<string, string>;
  header?: Record<string, string>;
}

export interface SocketOptions {
  url: string;
  query?: Query;
  header?: Record<string, string>;
  protocols?: string[];
}

export interface LoginData {
  token: string;
  sign_key: string;
  expires_in: number;
  [key: string]: any;
}

export interface Client {
  login(): Promise<LoginData>;
  request<T = any>(options: RequestOptions): Promise<Response<T>>;
  requestStream(options: RequestOptions, onChunk: (text: string) => void): Promise<StreamResponse>;
  uploadFile<T = any>(options: UploadOptions): Promise<Response<T>>;
  /** Resolves to wx.connectSocket's SocketTask. */
  connectSocket(options: SocketOptions): Promise<any>;
}

export declare function createClient(options: ClientOptions): Client;

export interface SignOptions {
  method: string;
  /** As sent, percent-encoded. */
  path: string;
  /** The raw query, without '?'. */
  query?: string;
  /** Unix seconds. */
  timestamp: number;
  nonce: string;
  body?: string | ArrayBuffer | ArrayBufferView | typeof UNSIGNED_PAYLOAD | null;
  signKey: string;
}

export interface SignatureHeaders {
  'X-Edge-Timestamp': string;
  'X-Edge-Nonce': string;
  'X-Edge-Signature': string;
  'X-Edge-Body'?: 'UNSIGNED-PAYLOAD';
}

export declare function sign(options: SignOptions): SignatureHeaders;
export declare function canonicalQuery(rawQuery: string): string;
export declare function encodeQuery(params: Query): string;
export declare function sha256(bytes: Uint8Array): Uint8Array;
export declare function hmacSha256(key: Uint8Array, message: Uint8Array): Uint8Array;
export declare function hex(bytes: Uint8Array): string;
export declare function utf8(text: string): Uint8Array;

export interface Utf8Decoder {
  /** Text of the complete characters so far; a cut character waits for the next call. */
  decode(chunk: ArrayBuffer): string;
  /** What remains: U+FFFD if the stream ended inside a character. */
  end(): string;
}

export declare function utf8Decoder(): Utf8Decoder;

export declare const UNSIGNED_PAYLOAD: 'UNSIGNED-PAYLOAD';
