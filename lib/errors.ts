/**
 * Typed errors. Native errors arrive as plain `Error`s carrying a `code`
 * (`NODE_MOE_GGUF_FORMAT`, …) and sometimes an `offset`; {@link translateNativeError} turns them
 * into these classes so callers can use `instanceof`.
 */

/** Base class of every error node-moe throws on purpose. */
export class NodeMoeError extends Error {
  /** Stable machine-readable code, e.g. `NODE_MOE_GGUF_FORMAT`. */
  readonly code: string;
  constructor(message: string, code: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}

/** The file is not a valid GGUF file. `offset` is the byte offset of the offending field. */
export class GgufError extends NodeMoeError {
  /** Byte offset in the file of the field that is wrong, when known. */
  readonly offset: number | undefined;
  /** The file that was read, when known. */
  readonly path: string | undefined;
  constructor(message: string, options: { offset?: number; path?: string; cause?: unknown } = {}) {
    super(message, 'NODE_MOE_GGUF_FORMAT', options);
    this.offset = options.offset;
    this.path = options.path;
  }
}

/** A ggml tensor type that node-moe recognises but cannot compute with (e.g. IQ2_XXS). */
export class UnsupportedTypeError extends NodeMoeError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, 'NODE_MOE_UNSUPPORTED_TYPE', options);
  }
}

/** The CPU lacks an instruction set that was required or explicitly requested. */
export class CpuUnsupportedError extends NodeMoeError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, 'NODE_MOE_CPU_UNSUPPORTED', options);
  }
}

/** The native addon could not be found or loaded; the message lists what to do about it. */
export class NativeBindingError extends NodeMoeError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, 'NODE_MOE_BINDING', options);
  }
}

/**
 * A native allocation failed, or a model does not fit in GPU memory with the placement asked for
 * (`gpu: 'cuda'`); the message then names what would fit (`experts: 'cpu'`, fewer `gpuLayers`).
 * Nothing was changed; the process keeps running.
 */
export class OutOfMemoryError extends NodeMoeError {
  /** Bytes the placement needs on the GPU (only for GPU placements). */
  readonly neededBytes: number | undefined;
  /** Bytes available there: free memory minus the reserve kept free (only for GPU placements). */
  readonly availableBytes: number | undefined;
  constructor(message: string, options: { cause?: unknown; neededBytes?: number; availableBytes?: number } = {}) {
    super(message, 'NODE_MOE_OUT_OF_MEMORY', options.cause === undefined ? undefined : { cause: options.cause });
    this.neededBytes = options.neededBytes;
    this.availableBytes = options.availableBytes;
  }
}

/**
 * The CUDA backend was asked for (`gpu: 'cuda'`) and cannot be used: no NVIDIA driver or device, a
 * driver that failed to initialise, a build of node-moe without the CUDA backend, or one whose
 * CUDA backend cannot run the model. Nothing stays loaded; `reason` says which, in one line.
 */
export class GpuUnavailableError extends NodeMoeError {
  /** Why CUDA cannot be used, e.g. `'no NVIDIA driver (libcuda.so.1 not found)'`. */
  readonly reason: string;
  constructor(reason: string, options?: { cause?: unknown }) {
    super(`CUDA is not available: ${reason}`, 'NODE_MOE_GPU_UNAVAILABLE', options);
    this.reason = reason;
  }
}

/** The file is a valid GGUF but not a model node-moe can run (unknown architecture, missing or mis-shaped tensor). */
export class ModelFormatError extends NodeMoeError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, 'NODE_MOE_MODEL_FORMAT', options);
  }
}

/** Evaluating would grow a sequence past its context size. Nothing was evaluated; the sequence stays usable. */
export class ContextOverflowError extends NodeMoeError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, 'NODE_MOE_CONTEXT_OVERFLOW', options);
  }
}

/** The model (or sequence) was disposed before or during the call. */
export class ModelDisposedError extends NodeMoeError {
  constructor(message = 'the model was disposed', options?: { cause?: unknown }) {
    super(message, 'NODE_MOE_DISPOSED', options);
  }
}

/**
 * The work was aborted through its `signal` (name `AbortError`, code `ABORT_ERR`, as Node's own
 * APIs); `cause` is the signal's reason.
 */
export class AbortError extends NodeMoeError {
  constructor(message = 'the operation was aborted', options?: { cause?: unknown }) {
    super(message, 'ABORT_ERR', options);
  }
}

/**
 * A chat template could not be used: it does not parse, fails to render, calls `raise_exception`, or
 * the named template is not in the file. The message says which template and why.
 */
export class ChatTemplateError extends NodeMoeError {
  /** Which template: a metadata key (`tokenizer.chat_template`), `built-in <name>`, or `''` for a template passed as text. */
  readonly templateName: string;
  /** What went wrong: it did not parse, failed while rendering, raised an error itself, or does not exist. */
  readonly reason: 'parse' | 'render' | 'raised' | 'missing';
  constructor(
    message: string,
    options: { templateName: string; reason: 'parse' | 'render' | 'raised' | 'missing'; cause?: unknown },
  ) {
    super(message, 'NODE_MOE_CHAT_TEMPLATE', options.cause === undefined ? undefined : { cause: options.cause });
    this.templateName = options.templateName;
    this.reason = options.reason;
  }
}

/**
 * A saved sequence or chat state that cannot be loaded: not a state file, damaged or truncated,
 * saved from another model or KV cache type, or larger than the context.
 */
export class StateFormatError extends NodeMoeError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, 'NODE_MOE_STATE_FORMAT', options);
    this.name = 'StateFormatError';
  }
}

/** Turns an error thrown by the addon into the matching typed error; other values pass through. */
export function translateNativeError(error: unknown, context: { path?: string } = {}): unknown {
  if (!(error instanceof Error) || error instanceof NodeMoeError) return error;
  const code = (error as { code?: unknown }).code;
  const offset = (error as { offset?: unknown }).offset;
  const where = context.path === undefined ? '' : ` (${context.path})`;
  switch (code) {
    case 'NODE_MOE_GGUF_FORMAT': {
      const at = typeof offset === 'number' ? ` at byte ${offset}` : '';
      return new GgufError(`invalid GGUF file${where}${at}: ${error.message}`, {
        offset: typeof offset === 'number' ? offset : undefined,
        path: context.path,
        cause: error,
      });
    }
    case 'NODE_MOE_UNSUPPORTED_TYPE':
      return new UnsupportedTypeError(error.message + where, { cause: error });
    case 'NODE_MOE_CPU_UNSUPPORTED':
      return new CpuUnsupportedError(error.message, { cause: error });
    case 'NODE_MOE_OUT_OF_MEMORY': {
      const { neededBytes, availableBytes } = error as { neededBytes?: unknown; availableBytes?: unknown };
      return new OutOfMemoryError(error.message + where, {
        cause: error,
        ...(typeof neededBytes === 'number' ? { neededBytes } : {}),
        ...(typeof availableBytes === 'number' ? { availableBytes } : {}),
      });
    }
    case 'NODE_MOE_GPU_UNAVAILABLE':
      return new GpuUnavailableError(error.message, { cause: error });
    case 'NODE_MOE_MODEL_FORMAT':
      return new ModelFormatError(error.message + where, { cause: error });
    case 'NODE_MOE_CONTEXT_OVERFLOW':
      return new ContextOverflowError(error.message, { cause: error });
    case 'NODE_MOE_ABORTED':
      return new AbortError(error.message, { cause: error });
    case 'NODE_MOE_STATE_FORMAT':
      return new StateFormatError(error.message, { cause: error });
    case 'NODE_MOE_INVALID_ARGUMENT':
      return new RangeError(error.message + where, { cause: error });
    case 'NODE_MOE_IO':
      return Object.assign(new Error(error.message, { cause: error }), { code });
    default:
      return error;
  }
}

/** Runs `fn`, translating native errors. */
export async function withNativeErrors<T>(fn: () => Promise<T> | T, context: { path?: string } = {}): Promise<T> {
  try {
    return await fn();
  } catch (error) {
    throw translateNativeError(error, context);
  }
}
