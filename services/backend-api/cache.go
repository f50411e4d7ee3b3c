package main

// Redis access: Debian's redigo client (vendor/, VENDORED.md; bookworm packages no go-redis). The
// connection authenticates with REDIS_PASSWORD when one is set.

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/gomodule/redigo/redis"

	"veza/backend-api/kit"
)

// Counter counts plays in Redis.
type Counter struct {
	pool *redis.Pool
}

// NewCounter prepares a pool of authenticated connections to addr (host:port).
func NewCounter(addr, password string) *Counter {
	return &Counter{pool: &redis.Pool{
		MaxIdle:     4,
		IdleTimeout: time.Minute,
		DialContext: func(ctx context.Context) (redis.Conn, error) {
			return redis.DialContext(ctx, "tcp", addr, redis.DialPassword(password),
				redis.DialConnectTimeout(2*time.Second), redis.DialReadTimeout(2*time.Second),
				redis.DialWriteTimeout(2*time.Second))
		},
	}}
}

// redisRejected: the server's answers to a refused AUTH, or to a command sent without one it requires
// (WRONGPASS/NOAUTH since Redis 6; "ERR invalid password" before; AUTH sent to a server without a password).
func classifyRedis(err error) error {
	if err == nil {
		return nil
	}
	var re redis.Error
	if errors.As(err, &re) {
		msg := string(re)
		for _, p := range []string{"WRONGPASS", "NOAUTH", "ERR invalid password", "ERR AUTH", "ERR Client sent AUTH"} {
			if strings.HasPrefix(msg, p) {
				return kit.Rejected(errors.New(msg))
			}
		}
	}
	return err
}

func (c *Counter) do(ctx context.Context, cmd string, args ...any) (any, error) {
	conn, err := c.pool.GetContext(ctx)
	if err != nil {
		return nil, classifyRedis(err)
	}
	defer conn.Close()
	reply, err := conn.Do(cmd, args...) // bounded by the dial options' read/write timeouts
	return reply, classifyRedis(err)
}

// Ready: PING answers PONG with these credentials.
func (c *Counter) Ready(ctx context.Context) error {
	reply, err := redis.String(c.do(ctx, "PING"))
	if err != nil {
		return err
	}
	if reply != "PONG" {
		return errors.New("PING answered " + reply + ", not PONG")
	}
	return nil
}

func playsKey(track string) string { return "veza:plays:" + track }

// Incr counts one play of track and returns the new count.
func (c *Counter) Incr(ctx context.Context, track string) (int, error) {
	return redis.Int(c.do(ctx, "INCR", playsKey(track)))
}

// Get returns the plays of track (0 when none was counted).
func (c *Counter) Get(ctx context.Context, track string) (int, error) {
	n, err := redis.Int(c.do(ctx, "GET", playsKey(track)))
	if errors.Is(err, redis.ErrNil) {
		return 0, nil
	}
	return n, err
}
