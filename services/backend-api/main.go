// veza-backend-api: the Veza HTTP API. Ready only when PostgreSQL and Redis answer at the protocol level.
//
// Configuration (environment): LISTEN_ADDR (:8080), DB_HOST (postgres), DB_PORT (5432),
// REDIS_HOST (redis), REDIS_PORT (6379), REDIS_PASSWORD (optional).
package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"veza/backend-api/kit"
)

var trackID = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

func main() {
	db := net.JoinHostPort(kit.Env("DB_HOST", "postgres"), kit.Env("DB_PORT", "5432"))
	redis := net.JoinHostPort(kit.Env("REDIS_HOST", "redis"), kit.Env("REDIS_PORT", "6379"))
	redisPassword := kit.Env("REDIS_PASSWORD", "")

	s := kit.New("veza-backend-api", kit.Env("LISTEN_ADDR", ":8080"))
	s.Checks = []kit.Check{
		{Name: "postgres", Run: func(ctx context.Context) error { return pingPostgres(ctx, db) }},
		{Name: "redis", Run: func(ctx context.Context) error {
			_, err := redisCommand(ctx, redis, redisPassword, "PING")
			return err
		}},
	}
	// The API endpoint: POST /api/v1/tracks/{id}/plays counts a play in Redis; GET reads the count.
	s.Handle("/api/v1/tracks/", func(w http.ResponseWriter, r *http.Request) {
		parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/api/v1/tracks/"), "/")
		if len(parts) != 2 || parts[1] != "plays" || !trackID.MatchString(parts[0]) {
			kit.JSON(w, http.StatusNotFound, map[string]any{"error": "use /api/v1/tracks/{id}/plays"})
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		key := "veza:plays:" + parts[0]
		var reply string
		var err error
		switch r.Method {
		case http.MethodPost:
			reply, err = redisCommand(ctx, redis, redisPassword, "INCR", key)
		case http.MethodGet:
			reply, err = redisCommand(ctx, redis, redisPassword, "GET", key)
		default:
			w.Header().Set("Allow", "GET, POST")
			kit.JSON(w, http.StatusMethodNotAllowed, map[string]any{"error": "method not allowed"})
			return
		}
		if err != nil {
			kit.Log("error", "redis command failed", map[string]any{"error": err.Error()})
			kit.JSON(w, http.StatusServiceUnavailable, map[string]any{"error": "redis unavailable"})
			return
		}
		n, _ := strconv.Atoi(reply) // a missing key (nil reply) counts as 0
		kit.JSON(w, http.StatusOK, map[string]any{"track": parts[0], "plays": n})
	})
	kit.Main(s)
}

// pingPostgres sends an SSLRequest; a live server answers a single byte, 'S' or 'N'.
func pingPostgres(ctx context.Context, addr string) error {
	req := make([]byte, 8)
	binary.BigEndian.PutUint32(req[0:4], 8)
	binary.BigEndian.PutUint32(req[4:8], 80877103)
	b, err := kit.Probe(ctx, addr, req, 1)
	if err != nil {
		return err
	}
	if len(b) != 1 || (b[0] != 'S' && b[0] != 'N') {
		return fmt.Errorf("unexpected answer to SSLRequest: %q", b)
	}
	return nil
}

// redisCommand sends one RESP command (after AUTH when a password is set) and returns a simple,
// integer or bulk reply as a string ("" for a nil bulk); an error reply becomes an error.
func redisCommand(ctx context.Context, addr, password string, args ...string) (string, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	rd := bufio.NewReader(conn)
	if password != "" {
		if _, err := roundTrip(conn, rd, "AUTH", password); err != nil {
			return "", fmt.Errorf("AUTH: %w", err)
		}
	}
	reply, err := roundTrip(conn, rd, args...)
	if err == nil && args[0] == "PING" && reply != "PONG" {
		return "", fmt.Errorf("PING answered %q, not PONG", reply)
	}
	return reply, err
}

func roundTrip(conn net.Conn, rd *bufio.Reader, args ...string) (string, error) {
	var sb strings.Builder
	fmt.Fprintf(&sb, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&sb, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := conn.Write([]byte(sb.String())); err != nil {
		return "", err
	}
	line, err := rd.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return "", errors.New("empty reply")
	}
	switch line[0] {
	case '+', ':':
		return line[1:], nil
	case '-':
		return "", errors.New(line[1:])
	case '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil {
			return "", err
		}
		if n < 0 {
			return "", nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(rd, buf); err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	}
	return "", fmt.Errorf("unsupported reply %q", line)
}
