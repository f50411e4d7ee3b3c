// veza-docs: a tiny static server for the Veza documentation site. Ready when it can read its index.
//
// Configuration (environment): LISTEN_ADDR (:8083), SITE_DIR (/app/site).
package main

import (
	"context"
	"net/http"
	"os"
	"path/filepath"

	"veza/docs/kit"
)

func main() {
	dir := kit.Env("SITE_DIR", "/app/site")
	s := kit.New("veza-docs", kit.Env("LISTEN_ADDR", ":8083"))
	s.Checks = []kit.Check{{Name: "index", Run: func(ctx context.Context) error {
		_, err := os.ReadFile(filepath.Join(dir, "index.html"))
		return err
	}}}
	files := http.FileServer(http.Dir(dir))
	s.Handle("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Content-Type-Options", "nosniff")
		files.ServeHTTP(w, r)
	})
	kit.Main(s)
}
