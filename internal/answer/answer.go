// Package answer owns the steps of a route plan that shape what the client
// is answered rather than whether the upstream is asked: CORS, HTTP basic
// authentication (htpasswd files of bcrypt hashes) and custom error pages.
// Each is compiled once from the route's config; a route without them
// carries a nil pointer and pays nothing.
package answer
