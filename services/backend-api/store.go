package main

// PostgreSQL access: database/sql with Debian's lib/pq driver (vendor/, VENDORED.md). Every query of the
// service is a method of Store, and the schema is the ordered SQL files of migrations/ (embedded), so a
// separate migrator (a release stage) can apply the same files with the same code: `-migrate`.

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/lib/pq"

	"veza/backend-api/kit"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// SchemaUses is schema-uses.txt: the tables and columns this version's queries use. Embedded so that the image
// itself says what it needs: `-schema-uses` prints it, and the migrate stage asks the running image before it
// lets a contract step drop something.
//
//go:embed schema-uses.txt
var SchemaUses string

// Migration is one schema version: migrations/NNNN_name.sql.
type Migration struct {
	Version int
	Name    string
	SQL     string
}

// Migrations reads the embedded migrations, ordered by version; a file not named NNNN_name.sql or a repeated
// version is an error (a build that embeds them is broken, not a running database).
func Migrations() ([]Migration, error) {
	entries, err := migrationFiles.ReadDir("migrations")
	if err != nil {
		return nil, err
	}
	var out []Migration
	seen := map[int]string{}
	for _, e := range entries {
		num, name, ok := strings.Cut(strings.TrimSuffix(e.Name(), ".sql"), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("migration %s: name it NNNN_what.sql (NNNN > 0)", e.Name())
		}
		if prev, dup := seen[v]; dup {
			return nil, fmt.Errorf("migrations %s and %s share version %d", prev, e.Name(), v)
		}
		seen[v] = e.Name()
		body, err := migrationFiles.ReadFile("migrations/" + e.Name())
		if err != nil {
			return nil, err
		}
		out = append(out, Migration{Version: v, Name: name, SQL: string(body)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	return out, nil
}

// DBConfig is how the service reaches PostgreSQL (environment: DB_HOST, DB_PORT, DB_NAME, DB_USER,
// DB_PASSWORD, DB_SSLMODE).
type DBConfig struct {
	Host, Port, Name, User, Password, SSLMode string
}

// quoteDSN quotes a value for lib/pq's key=value connection string (libpq's rules: single quotes, and a
// backslash before ' and \). The URL form is avoided: its parse errors repeat the URL, password included.
func quoteDSN(v string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'"
}

// DSN is the key=value connection string.
func (c DBConfig) DSN() string {
	parts := []string{"host=" + quoteDSN(c.Host), "port=" + quoteDSN(c.Port), "dbname=" + quoteDSN(c.Name),
		"user=" + quoteDSN(c.User), "sslmode=" + quoteDSN(c.SSLMode), "connect_timeout=5",
		"application_name=veza-backend-api"}
	if c.Password != "" {
		parts = append(parts, "password="+quoteDSN(c.Password))
	}
	return strings.Join(parts, " ")
}

// Store is the service's PostgreSQL data access.
type Store struct {
	db       *sql.DB
	password string
}

// OpenStore prepares a connection pool (nothing is dialled until the first query).
func OpenStore(c DBConfig) (*Store, error) {
	conn, err := pq.NewConnector(c.DSN())
	if err != nil {
		return nil, fmt.Errorf("DB settings: %w", err)
	}
	db := sql.OpenDB(conn)
	db.SetMaxOpenConns(8)
	db.SetMaxIdleConns(4)
	db.SetConnMaxLifetime(5 * time.Minute)
	return &Store{db: db, password: c.Password}, nil
}

// classify turns a driver error into the one line /ready and the logs show: an authorization failure
// (SQLSTATE class 28: invalid_authorization_specification, invalid_password) becomes kit.Rejected; the
// password never appears in the text.
func (s *Store) classify(err error) error {
	if err == nil {
		return nil
	}
	var pe *pq.Error
	if errors.As(err, &pe) {
		msg := fmt.Errorf("%s (SQLSTATE %s)", pe.Message, pe.Code)
		if pe.Code.Class() == "28" {
			return kit.Rejected(msg)
		}
		return msg
	}
	text := err.Error()
	if s.password != "" {
		text = strings.ReplaceAll(text, s.password, "***")
	}
	return errors.New(text)
}

const migrationLock = 7_301_117 // pg_advisory_xact_lock key: one migrator at a time per database

// SchemaVersion is the highest applied migration (0: none, or no schema_migrations table yet).
func (s *Store) SchemaVersion(ctx context.Context) (int, error) {
	var v sql.NullInt64
	err := s.db.QueryRowContext(ctx, `SELECT max(version) FROM schema_migrations`).Scan(&v)
	var pe *pq.Error
	if errors.As(err, &pe) && pe.Code == "42P01" { // undefined_table
		return 0, nil
	}
	if err != nil {
		return 0, s.classify(err)
	}
	return int(v.Int64), nil
}

// Migrate applies the migrations newer than the database's version, each in its own transaction under an
// advisory lock (concurrent migrators wait, then find nothing to do). It returns the versions applied; on
// an error the failing migration is rolled back and the database stays at the last one applied.
func (s *Store) Migrate(ctx context.Context, ms []Migration) ([]int, error) {
	var applied []int
	for _, m := range ms {
		done, err := s.applyOne(ctx, m)
		if err != nil {
			return applied, fmt.Errorf("migration %04d_%s: %w", m.Version, m.Name, s.classify(err))
		}
		if done {
			applied = append(applied, m.Version)
		}
	}
	return applied, nil
}

func (s *Store) applyOne(ctx context.Context, m Migration) (bool, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return false, err
	}
	defer func() { _ = tx.Rollback() }()
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, migrationLock); err != nil {
		return false, err
	}
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return false, err
	}
	var exists bool
	if err := tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = $1)`,
		m.Version).Scan(&exists); err != nil {
		return false, err
	}
	if exists {
		return false, nil
	}
	if _, err := tx.ExecContext(ctx, m.SQL); err != nil {
		return false, err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, name) VALUES ($1, $2)`,
		m.Version, m.Name); err != nil {
		return false, err
	}
	return true, tx.Commit()
}

// Ping checks that PostgreSQL answers and accepts these credentials (kit.Rejected when it refuses them).
func (s *Store) Ping(ctx context.Context) error {
	return s.classify(s.db.PingContext(ctx))
}

// Ready checks that PostgreSQL accepts these credentials and that the schema is at least `want`.
func (s *Store) Ready(ctx context.Context, want int) error {
	if err := s.Ping(ctx); err != nil {
		return err
	}
	have, err := s.SchemaVersion(ctx)
	if err != nil {
		return err
	}
	if have < want {
		return fmt.Errorf("schema at version %d, this build needs %d", have, want)
	}
	return nil
}

// Track is one row of tracks.
type Track struct {
	ID        string    `json:"id"`
	Title     string    `json:"title"`
	CreatedBy string    `json:"created_by"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// PutTrack inserts or updates a track (the caller, `by`, is recorded on creation) and returns the stored row.
func (s *Store) PutTrack(ctx context.Context, id, title, by string) (Track, error) {
	var t Track
	err := s.db.QueryRowContext(ctx, `INSERT INTO tracks (id, title, created_by) VALUES ($1, $2, $3)
		ON CONFLICT (id) DO UPDATE SET title = EXCLUDED.title, updated_at = now()
		RETURNING id, title, created_by, created_at, updated_at`, id, title, by).
		Scan(&t.ID, &t.Title, &t.CreatedBy, &t.CreatedAt, &t.UpdatedAt)
	return t, s.classify(err)
}

// ErrNotFound: no such row.
var ErrNotFound = errors.New("not found")

// GetTrack reads a track; ErrNotFound when there is none.
func (s *Store) GetTrack(ctx context.Context, id string) (Track, error) {
	var t Track
	err := s.db.QueryRowContext(ctx, `SELECT id, title, created_by, created_at, updated_at FROM tracks WHERE id = $1`,
		id).Scan(&t.ID, &t.Title, &t.CreatedBy, &t.CreatedAt, &t.UpdatedAt)
	if errors.Is(err, sql.ErrNoRows) {
		return t, ErrNotFound
	}
	return t, s.classify(err)
}
