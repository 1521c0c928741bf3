package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/rs/zerolog"

	"github.com/segd/segd/api"
	"github.com/segd/segd/engine"
)

// reloadOnHangup reloads eng's rules file on every SIGHUP (as POST
// /v1/rules/reload does), and the token and TLS files of srv (if not nil), until ctx is
// done; a file with errors leaves the running rules (or credentials) in
// place and is logged. The returned stop waits for the
// watcher to end. report, if set, is told each outcome too.
func reloadOnHangup(ctx context.Context, eng *engine.Engine, srv *api.Server, log zerolog.Logger, report func(*engine.ReloadResult, error)) (stop func()) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
			}
			if srv != nil {
				if err := srv.ReloadCredentials(); err != nil {
					log.Error().Err(err).Msg("api credentials reload failed; the previous ones stay")
				}
			}
			res, err := eng.Reload(ctx)
			if err != nil {
				log.Error().Err(err).Msg("rules reload failed; the running rules stay")
			} else {
				log.Info().Int64("rules_version", res.Version).Int("changes", res.Changes).Msg("rules reloaded on SIGHUP")
			}
			if report != nil {
				report(res, err)
			}
		}
	}()
	return func() {
		signal.Stop(hup)
		cancel()
		<-done
	}
}
