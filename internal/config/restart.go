package config

import "fmt"

// restartKeys are the settings a running process cannot take live: they
// belong to listeners, the certificate storage, the cluster connection or
// the app processes edge runs, made once at start.
var restartKeys = []struct {
	key string
	get func(*Config) any
}{
	{"server.listen_https", func(c *Config) any { return c.Server.ListenHTTPS }},
	{"server.listen_http", func(c *Config) any { return c.Server.ListenHTTP }},
	{"server.listen_admin", func(c *Config) any { return c.Server.ListenAdmin }},
	{"server.listen_wechat_api", func(c *Config) any { return c.Server.ListenWechatAPI }},
	{"wechat_api", func(c *Config) any { return c.WechatAPI }},
	{"server.state_dir", func(c *Config) any { return c.Server.StateDir }},
	{"server.read_header_timeout", func(c *Config) any { return c.Server.ReadHeaderTimeout }},
	{"server.write_timeout", func(c *Config) any { return c.Server.WriteTimeout }},
	{"server.idle_timeout", func(c *Config) any { return c.Server.IdleTimeout }},
	{"server.max_header_bytes", func(c *Config) any { return c.Server.MaxHeaderBytes }},
	// Printed: a slice is not comparable, and its text is its value.
	{"server.proxy_protocol_from", func(c *Config) any { return fmt.Sprint(c.Server.ProxyProtocolFrom) }},
	{"tls.mode", func(c *Config) any { return c.TLS.Mode }},
	{"cluster.redis", func(c *Config) any { return c.Cluster.Redis }},
	{"cluster.redis_ca", func(c *Config) any { return c.Cluster.RedisCA }},
	{"cluster.redis_client_cert", func(c *Config) any { return c.Cluster.RedisClientCert }},
	{"cluster.redis_client_key", func(c *Config) any { return c.Cluster.RedisClientKey }},
	{"log.access_file", func(c *Config) any { return c.Log.AccessFile }},
	{"log.access_max_size", func(c *Config) any { return c.Log.AccessMaxSize }},
	// Slots and their ports are chosen once; a change of how instances
	// run is a rolling deploy (RedeployNeeded), not a restart.
	{"upstreams.run", func(c *Config) any { return runFingerprint(c) }},
	{"log.access_max_backups", func(c *Config) any { return c.Log.AccessMaxBackups }},
}

// RestartNeeded returns the key paths whose values differ between old and
// next but only take effect on a restart. The gateway logs them and keeps
// the old values; everything else in next is applied live.
func RestartNeeded(old, next *Config) []string {
	if old == nil || next == nil {
		return nil
	}
	var keys []string
	for _, k := range restartKeys {
		if k.get(old) != k.get(next) {
			keys = append(keys, k.key)
		}
	}
	return keys
}
