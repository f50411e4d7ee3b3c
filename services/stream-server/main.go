// veza-stream-server: stores uploaded streams in its volume. Ready when the volume is writable.
//
// Configuration (environment): LISTEN_ADDR (:8082), STREAMS_DIR (/app/streams), MAX_UPLOAD_BYTES (64 MiB).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"veza/stream-server/kit"
)

var streamID = regexp.MustCompile(`^[A-Za-z0-9_-]{1,128}$`)

func main() {
	dir := kit.Env("STREAMS_DIR", "/app/streams")
	maxBytes, err := strconv.ParseInt(kit.Env("MAX_UPLOAD_BYTES", strconv.Itoa(64<<20)), 10, 64)
	if err != nil || maxBytes <= 0 {
		kit.Log("error", "MAX_UPLOAD_BYTES must be a positive integer", map[string]any{"value": os.Getenv("MAX_UPLOAD_BYTES")})
		os.Exit(2)
	}
	s := kit.New("veza-stream-server", kit.Env("LISTEN_ADDR", ":8082"))
	s.Checks = []kit.Check{{Name: "volume", Run: func(ctx context.Context) error { return writable(dir) }}}
	s.Handle("/streams/", func(w http.ResponseWriter, r *http.Request) {
		id := strings.TrimPrefix(r.URL.Path, "/streams/")
		if !streamID.MatchString(id) {
			kit.JSON(w, http.StatusBadRequest, map[string]any{"error": "stream id must match [A-Za-z0-9_-]{1,128}"})
			return
		}
		path := filepath.Join(dir, id)
		switch r.Method {
		case http.MethodPut:
			n, err := store(path, http.MaxBytesReader(w, r.Body, maxBytes))
			if err != nil {
				var tooBig *http.MaxBytesError
				if errors.As(err, &tooBig) {
					kit.JSON(w, http.StatusRequestEntityTooLarge, map[string]any{"error": "upload too large"})
					return
				}
				kit.Log("error", "store failed", map[string]any{"id": id, "error": err.Error()})
				kit.JSON(w, http.StatusInternalServerError, map[string]any{"error": "cannot store the stream"})
				return
			}
			kit.JSON(w, http.StatusCreated, map[string]any{"id": id, "bytes": n})
		case http.MethodGet, http.MethodHead:
			f, err := os.Open(path)
			if errors.Is(err, fs.ErrNotExist) {
				kit.JSON(w, http.StatusNotFound, map[string]any{"error": "no such stream"})
				return
			} else if err != nil {
				kit.JSON(w, http.StatusInternalServerError, map[string]any{"error": "cannot read the stream"})
				return
			}
			defer f.Close()
			st, _ := f.Stat()
			w.Header().Set("Content-Type", "application/octet-stream")
			http.ServeContent(w, r, id, st.ModTime(), f)
		default:
			w.Header().Set("Allow", "GET, HEAD, PUT")
			kit.JSON(w, http.StatusMethodNotAllowed, map[string]any{"error": "method not allowed"})
		}
	})
	kit.Main(s)
}

// store writes atomically: a reader never sees half an upload.
func store(path string, body io.Reader) (int64, error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".upload-*")
	if err != nil {
		return 0, err
	}
	n, err := io.Copy(tmp, body)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return 0, err
	}
	return n, nil
}

func writable(dir string) error {
	f, err := os.CreateTemp(dir, ".ready-*")
	if err != nil {
		return fmt.Errorf("volume not writable: %w", err)
	}
	name := f.Name()
	_, err = f.Write([]byte("ok"))
	f.Close()
	os.Remove(name)
	return err
}
