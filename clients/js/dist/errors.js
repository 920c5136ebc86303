// Errors the client reports: the server's (with its stable code) and its own.
/** An error with a stable `code`: the server's error codes, or the client's own. */
export class CourierError extends Error {
    code;
    constructor(code, message, options) {
        super(message, options);
        this.name = 'CourierError';
        this.code = code;
    }
}
