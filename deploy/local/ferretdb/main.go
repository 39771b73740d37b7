// Command wenzheng-ferretdb runs FerretDB v1 with its SQLite backend as the local
// MongoDB-wire server for development and tests.
//
// The stock cmd/ferretdb binary built with `go install` panics at start because it
// expects build/version/version.txt to be generated first; embedding the ferretdb
// package avoids that and keeps the build a plain `go build`.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/FerretDB/FerretDB/ferretdb"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:27017", "TCP address to listen on")
	dataDir := flag.String("data-dir", "var/ferretdb", "directory holding the SQLite database files")
	logLevel := flag.String("log-level", "warn", "log level: debug, info, warn, error")
	synchronous := flag.String("synchronous", "normal",
		"SQLite synchronous pragma: normal (fsync at WAL checkpoints; survives a killed process) or full (fsync every commit; also survives power loss)")
	flag.Parse()

	if *synchronous != "normal" && *synchronous != "full" {
		fmt.Fprintf(os.Stderr, "wenzheng-ferretdb: -synchronous must be normal or full, got %q\n", *synchronous)
		os.Exit(2)
	}
	if err := run(*listen, *dataDir, *logLevel, *synchronous); err != nil {
		fmt.Fprintln(os.Stderr, "wenzheng-ferretdb:", err)
		os.Exit(1)
	}
}

func run(listen, dataDir, logLevel, synchronous string) error {
	var level slog.Level
	if err := level.UnmarshalText([]byte(logLevel)); err != nil {
		return fmt.Errorf("bad -log-level %q: %w", logLevel, err)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	abs, err := filepath.Abs(dataDir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return err
	}

	f, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: listen},
		Logger:    logger,
		Handler:   "sqlite",
		// FerretDB adds busy_timeout, WAL and auto_vacuum itself. SQLite's default synchronous=FULL
		// fsyncs the WAL on every commit, which caps writes at the disk's flush rate; in WAL mode NORMAL
		// keeps the database consistent and loses nothing when a process is killed, only on power loss.
		SQLiteURL: "file:" + abs + "/?_pragma=synchronous(" + synchronous + ")",
	})
	if err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	go maintainIDIndexes(ctx, abs, time.Second, logger)

	logger.Warn("wenzheng-ferretdb listening", "listen", listen, "data_dir", abs)
	return f.Run(ctx)
}
