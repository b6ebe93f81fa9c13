// Package auth authenticates clients and decides what they may do.
//
// # Keys and capabilities
//
// API keys are configured as a name and a secret; clients present them as
// "name:secret" (or as a separate name and secret where the protocol has a
// username and a password). Every key carries a [Capability]: a map from a
// resource pattern to the operations allowed on the names it matches.
// Patterns are "*" (every name), a prefix glob such as "chat:*" (every name
// starting with "chat:", including "chat:" itself) or an exact name. The
// operations are publish, subscribe, presence, history, queue and admin;
// none of them implies another.
//
// # Tokens
//
// A key can issue tokens carrying a subset of its capability. The token
// format is part of Switchboard's public contract, so holders of a key may
// also sign tokens themselves:
//
//   - a JWT (RFC 7519) in compact serialisation, signed with HMAC-SHA256
//     using the key's secret as the HMAC key;
//   - header: "alg": "HS256" and "kid": the key name; any other algorithm,
//     including "none", is rejected;
//   - claims: "exp" (required) and "iat" (optional, must not lie in the
//     future), both in seconds since the Unix epoch;
//     "x-switchboard-capability" (required): the capability as a JSON object,
//     for example {"chat:*":["publish","subscribe"]}, where the operation "*"
//     stands for every operation; "x-switchboard-clientId" (optional): the
//     client identifier the holder must use, or "*" to let the client choose.
//     "nbf", when present, is honoured; other claims are ignored.
//
// A token is accepted when its signature verifies with the current secret of
// the key named by "kid", it has not expired (allowing [TokenLeeway] of clock
// skew) and it does not expire further in the future than the configured
// maximum token lifetime. What a token allows is its capability intersected
// with the key's capability as currently configured, so reducing a key's
// capability also restricts the tokens it has already issued, and removing
// the key or changing its secret revokes them.
//
// # Anonymous access and dev mode
//
// A request without credentials is anonymous: it may do only what the
// configuration allows anonymous clients to do on the channel's namespace,
// which is nothing unless configured. In dev mode (serve --dev) a request
// without credentials may do everything; credentials that are presented are
// still verified.
//
// All errors are *apierr.Error values with stable codes. Secrets never
// appear in any error.
package auth
