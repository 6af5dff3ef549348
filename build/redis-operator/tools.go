//go:build tools

// Wrapper module: pins the spotahome redis-operator so its build is reproducible.
package tools

import _ "github.com/spotahome/redis-operator/cmd/redisoperator"
