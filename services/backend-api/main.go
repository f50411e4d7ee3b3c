// veza-backend-api: the Veza HTTP API. Stores tracks in PostgreSQL and counts plays in Redis, with the
// credentials it is given; ready only when both accept them and the schema is at this build's version.
//
// Configuration (environment): LISTEN_ADDR (:8080), DB_HOST (postgres), DB_PORT (5432), DB_NAME (veza),
// DB_USER (veza), DB_PASSWORD, DB_SSLMODE (disable), REDIS_HOST (redis), REDIS_PORT (6379),
// REDIS_PASSWORD (optional), JWT_SECRET (required, >= 32 bytes: signs the write endpoints' tokens),
// MIGRATE_ON_START (true: apply migrations/ at start, retrying until PostgreSQL accepts them).
//
// `veza-backend-api -migrate` applies the migrations and exits (0 applied or nothing to do, 1 failed); its last
// log line carries the database's schema_version after the run, success or not. `-schema-version` only reads
// it (the migrate stage's resume check: the version the database holds, not the one a journal remembers).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"strings"
	"time"

	"veza/backend-api/kit"
)

var trackID = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// API holds the service's dependencies.
type API struct {
	store   *Store
	plays   *Counter
	auth    *Verifier
	version int // the schema version this build needs (its newest migration)
}

func fail(msg string, err error) {
	kit.Log("error", msg, map[string]any{"error": err.Error()})
	os.Exit(2)
}

func main() {
	for _, a := range os.Args[1:] {
		if a == "-healthcheck" || a == "--healthcheck" {
			os.Exit(kit.Healthcheck(kit.Env("LISTEN_ADDR", ":8080")))
		}
		if a == "-schema-uses" || a == "--schema-uses" {
			os.Stdout.WriteString(SchemaUses)
			os.Exit(0)
		}
	}
	migrations, err := Migrations()
	if err != nil {
		fail("bad migrations", err)
	}
	store, err := OpenStore(DBConfig{Host: kit.Env("DB_HOST", "postgres"), Port: kit.Env("DB_PORT", "5432"),
		Name: kit.Env("DB_NAME", "veza"), User: kit.Env("DB_USER", "veza"), Password: os.Getenv("DB_PASSWORD"),
		SSLMode: kit.Env("DB_SSLMODE", "disable")})
	if err != nil {
		fail("bad database settings", err)
	}
	for _, a := range os.Args[1:] {
		if a == "-migrate" || a == "--migrate" {
			os.Exit(migrateJob(store, migrations))
		}
		if a == "-schema-version" || a == "--schema-version" {
			os.Exit(reportVersion(store, migrations))
		}
	}
	auth, err := NewVerifier(os.Getenv("JWT_SECRET"))
	if err != nil {
		fail("bad JWT_SECRET", err)
	}
	api := &API{store: store, auth: auth, version: migrations[len(migrations)-1].Version,
		plays: NewCounter(net.JoinHostPort(kit.Env("REDIS_HOST", "redis"), kit.Env("REDIS_PORT", "6379")),
			os.Getenv("REDIS_PASSWORD"))}
	if kit.Env("MIGRATE_ON_START", "true") == "true" {
		go migrateUntilDone(store, migrations)
	}

	s := kit.New("veza-backend-api", kit.Env("LISTEN_ADDR", ":8080"))
	s.Checks = []kit.Check{
		{Name: "postgres", Run: func(ctx context.Context) error { return store.Ready(ctx, api.version) }},
		{Name: "redis", Run: api.plays.Ready},
	}
	// PUT/GET /api/v1/tracks/{id} (PostgreSQL); POST/GET /api/v1/tracks/{id}/plays (Redis).
	s.Handle("/api/v1/tracks/", api.tracks)
	kit.Main(s)
}

func migrateOnce(store *Store, ms []Migration) int {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	applied, err := store.Migrate(ctx, ms)
	if err != nil {
		fields := map[string]any{"error": err.Error(), "applied": applied, "latest": ms[len(ms)-1].Version}
		if v, verr := store.SchemaVersion(ctx); verr == nil {
			fields["schema_version"] = v // the failing migration rolled back: the last good version
		}
		kit.Log("error", "migration failed", fields)
		return 1
	}
	v, _ := store.SchemaVersion(ctx)
	kit.Log("info", "migrated", map[string]any{"applied": applied, "schema_version": v, "latest": ms[len(ms)-1].Version})
	return 0
}

// migrateJob is the release's migrator (a Job, or compose's one-shot): a database that does not answer yet is
// waited for (up to a minute); one that refuses the credentials, or a migration that fails, is not retried.
func migrateJob(store *Store, ms []Migration) int {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for {
		err := store.Ping(ctx)
		var rejected *kit.RejectedError
		if err == nil || errors.As(err, &rejected) || ctx.Err() != nil {
			break
		}
		time.Sleep(time.Second)
	}
	return migrateOnce(store, ms)
}

// reportVersion logs the database's schema version and this build's newest migration (exit 1: unreadable).
func reportVersion(store *Store, ms []Migration) int {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	v, err := store.SchemaVersion(ctx)
	if err != nil {
		kit.Log("error", "schema version unreadable", map[string]any{"error": err.Error()})
		return 1
	}
	kit.Log("info", "schema version", map[string]any{"schema_version": v, "latest": ms[len(ms)-1].Version})
	return 0
}

// migrateUntilDone retries while PostgreSQL is not there yet or refuses (readiness says why meanwhile).
func migrateUntilDone(store *Store, ms []Migration) {
	for delay := time.Second; ; delay = min(2*delay, 15*time.Second) {
		if migrateOnce(store, ms) == 0 {
			return
		}
		time.Sleep(delay)
	}
}

func min(a, b time.Duration) time.Duration {
	if a < b {
		return a
	}
	return b
}

func (a *API) tracks(w http.ResponseWriter, r *http.Request) {
	parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/api/v1/tracks/"), "/")
	if len(parts) < 1 || len(parts) > 2 || !trackID.MatchString(parts[0]) || (len(parts) == 2 && parts[1] != "plays") {
		kit.JSON(w, http.StatusNotFound, map[string]any{"error": "use /api/v1/tracks/{id} or /api/v1/tracks/{id}/plays"})
		return
	}
	id, plays := parts[0], len(parts) == 2
	write := map[bool]string{true: http.MethodPost, false: http.MethodPut}[plays]
	if r.Method != http.MethodGet && r.Method != write {
		w.Header().Set("Allow", "GET, "+write)
		kit.JSON(w, http.StatusMethodNotAllowed, map[string]any{"error": "method not allowed"})
		return
	}
	var subject string
	if r.Method != http.MethodGet {
		var err error
		if subject, err = a.auth.Subject(r); err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
			kit.JSON(w, http.StatusUnauthorized, map[string]any{"error": err.Error()})
			return
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
	defer cancel()
	if plays {
		a.servePlays(ctx, w, r.Method, id)
		return
	}
	var t Track
	var err error
	if r.Method == http.MethodPut {
		var in struct {
			Title string `json:"title"`
		}
		body, rerr := io.ReadAll(io.LimitReader(r.Body, 64<<10))
		if rerr != nil || json.Unmarshal(body, &in) != nil || strings.TrimSpace(in.Title) == "" || len(in.Title) > 500 {
			kit.JSON(w, http.StatusBadRequest, map[string]any{"error": `send JSON {"title": "..."} (1-500 characters)`})
			return
		}
		t, err = a.store.PutTrack(ctx, id, in.Title, subject)
	} else {
		t, err = a.store.GetTrack(ctx, id)
	}
	switch {
	case errors.Is(err, ErrNotFound):
		kit.JSON(w, http.StatusNotFound, map[string]any{"error": "no track " + id})
	case err != nil:
		kit.Log("error", "postgres query failed", map[string]any{"error": err.Error()})
		kit.JSON(w, http.StatusServiceUnavailable, map[string]any{"error": "postgres unavailable"})
	default:
		kit.JSON(w, http.StatusOK, t)
	}
}

func (a *API) servePlays(ctx context.Context, w http.ResponseWriter, method, id string) {
	var n int
	var err error
	if method == http.MethodPost {
		n, err = a.plays.Incr(ctx, id)
	} else {
		n, err = a.plays.Get(ctx, id)
	}
	if err != nil {
		kit.Log("error", "redis command failed", map[string]any{"error": err.Error()})
		kit.JSON(w, http.StatusServiceUnavailable, map[string]any{"error": "redis unavailable"})
		return
	}
	kit.JSON(w, http.StatusOK, map[string]any{"track": id, "plays": n})
}
