package config

// validate is the hook for the identity sections (apps, sessions,
// signatures); it runs after the core sections are checked. The identity
// feature fills it.
func (s *IdentitySections) validate(c *checker) {}

// validate is the hook for a route's identity policy; key is the route's
// key path, like "routes[3]". The identity feature fills it.
func (r *RouteAuth) validate(c *checker, key string) {}
