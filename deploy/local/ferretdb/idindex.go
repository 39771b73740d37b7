package main

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	_ "modernc.org/sqlite" // the driver FerretDB's SQLite backend uses
)

// idLookupExpr is the exact expression FerretDB v1.24's SQLite backend uses in the WHERE clause of
// every lookup, update and delete by _id (metadata.IDColumn). The index FerretDB creates for _id is
// written as `_ferretdb_sjson->"_id"`, which SQLite's planner does not match to that expression, so
// every update by _id scans the whole table and gets slower as the collection grows. An index on the
// exact expression makes those statements index lookups again. Nothing else changes: FerretDB still
// owns the tables; this only adds an index it never reads directly.
const idLookupExpr = `_ferretdb_sjson->'$._id'`

// maintainIDIndexes adds the missing index to every collection table, now and whenever new
// collections appear, until ctx ends.
func maintainIDIndexes(ctx context.Context, dataDir string, every time.Duration, logger *slog.Logger) {
	done := map[string]bool{}
	for {
		files, _ := filepath.Glob(filepath.Join(dataDir, "*.sqlite"))
		for _, file := range files {
			if err := indexDatabase(ctx, file, done); err != nil {
				logger.Debug("id index pass failed", "file", file, "error", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(every):
		}
	}
}

func indexDatabase(ctx context.Context, file string, done map[string]bool) error {
	if _, err := os.Stat(file); err != nil {
		return err
	}
	db, err := sql.Open("sqlite", "file:"+file+"?_pragma=busy_timeout(5000)&_pragma=journal_mode(wal)")
	if err != nil {
		return err
	}
	defer db.Close()
	rows, err := db.QueryContext(ctx, `SELECT table_name FROM _ferretdb_collections`)
	if err != nil {
		return err
	}
	var tables []string
	for rows.Next() {
		var t string
		if err := rows.Scan(&t); err == nil {
			tables = append(tables, t)
		}
	}
	rows.Close()
	for _, table := range tables {
		key := file + "/" + table
		if done[key] {
			continue
		}
		name := strings.ReplaceAll(table, `"`, ``) + "_wz_id_lookup"
		q := fmt.Sprintf(`CREATE INDEX IF NOT EXISTS %q ON %q (%s)`, name, table, idLookupExpr)
		if _, err := db.ExecContext(ctx, q); err != nil {
			return err
		}
		done[key] = true
	}
	return nil
}
