// trivydb-writer: writes a Trivy vulnerability DB (a BoltDB file) from a JSON list of entries on stdin.
//
// Each entry is {"path": ["debian 12", "bash"], "key": "CVE-2099-0001", "value": {...}}: nested buckets
// along path, then key = the JSON encoding of value (Trivy's own layout). Built in GOPATH mode with
// Debian's go.etcd.io/bbolt, so it needs no module download (air-gapped machines).
package main

import (
	"encoding/json"
	"fmt"
	"os"

	bolt "go.etcd.io/bbolt"
)

type entry struct {
	Path  []string        `json:"path"`
	Key   string          `json:"key"`
	Value json.RawMessage `json:"value"`
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: trivydb-writer OUT.db < entries.json")
		os.Exit(2)
	}
	var entries []entry
	if err := json.NewDecoder(os.Stdin).Decode(&entries); err != nil {
		fmt.Fprintln(os.Stderr, "bad entries JSON:", err)
		os.Exit(2)
	}
	_ = os.Remove(os.Args[1])
	db, err := bolt.Open(os.Args[1], 0o644, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "open:", err)
		os.Exit(1)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for i, e := range entries {
			if len(e.Path) == 0 {
				return fmt.Errorf("entry %d: empty path", i)
			}
			b, err := tx.CreateBucketIfNotExists([]byte(e.Path[0]))
			if err != nil {
				return err
			}
			for _, p := range e.Path[1:] {
				if b, err = b.CreateBucketIfNotExists([]byte(p)); err != nil {
					return err
				}
			}
			if e.Key == "" {
				continue // a bucket only (Trivy requires some buckets to exist)
			}
			if err := b.Put([]byte(e.Key), []byte(e.Value)); err != nil {
				return err
			}
		}
		return nil
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "write:", err)
		os.Exit(1)
	}
}
