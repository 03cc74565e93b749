// The analyst catalogue through clickhouse-go v2 over HTTP (what Grafana's ClickHouse data
// source uses): one JSON line per call, {"call", "ok", "detail"}. Run by
// tests/integration/test_analyst_drivers.py against the sink's endpoint.
//
//	catalogue HOST:PORT USER PASSWORD
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
)

func report(call string, err error, detail any) {
	line := map[string]any{"call": call, "ok": err == nil, "detail": detail}
	if err != nil {
		line["detail"] = err.Error()
	}
	out, _ := json.Marshal(line)
	fmt.Println(string(out))
}

func main() {
	addr, user, password := os.Args[1], os.Args[2], os.Args[3]
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	conn, err := clickhouse.Open(&clickhouse.Options{
		Addr:     []string{addr},
		Protocol: clickhouse.HTTP,
		Auth:     clickhouse.Auth{Database: "default", Username: user, Password: password},
	})
	if err != nil {
		report("connect", err, nil)
		return
	}
	defer conn.Close()
	report("connect", conn.Ping(ctx), "ping")

	version, err := conn.ServerVersion()
	detail := ""
	if err == nil {
		detail = version.String()
	}
	report("version", err, detail)

	strings := func(call, query string, args ...any) {
		rows, err := conn.Query(ctx, query, args...)
		if err != nil {
			report(call, err, nil)
			return
		}
		defer rows.Close()
		var values []string
		for rows.Next() {
			var v string
			if err := rows.Scan(&v); err != nil {
				report(call, err, nil)
				return
			}
			values = append(values, v)
		}
		report(call, rows.Err(), values)
	}
	strings("databases", "SHOW DATABASES")
	strings("tables", "SELECT name FROM system.tables WHERE database = 'rhythm' ORDER BY name")
	strings("columns", "SELECT name FROM system.columns WHERE database = 'rhythm' AND table = 'events' ORDER BY position")
	strings("describe", "DESCRIBE TABLE rhythm.events")
	strings("view", "SELECT toString(count()) FROM rhythm.open_alerts")
	strings("parameterised", "SELECT toString(count()) FROM rhythm.events FINAL WHERE tenant = {tenant:String}",
		clickhouse.Named("tenant", "acme"))

	rows, err := conn.Query(ctx, "SELECT toStartOfHour(occurred_at) AS h, count() AS n FROM rhythm.events FINAL GROUP BY h ORDER BY h")
	if err != nil {
		report("time_series", err, nil)
	} else {
		points := 0
		var total uint64
		for rows.Next() {
			var h time.Time
			var n uint64
			if err := rows.Scan(&h, &n); err != nil {
				report("time_series", err, nil)
				break
			}
			points++
			total += n
		}
		rows.Close()
		report("time_series", rows.Err(), map[string]any{"points": points, "events": total})
	}

	rows, err = conn.Query(ctx, "SELECT number, toString(number) FROM system.numbers LIMIT 1000000")
	if err != nil {
		report("large_result", err, nil)
	} else {
		var count uint64
		for rows.Next() {
			var n uint64
			var s string
			if err := rows.Scan(&n, &s); err != nil {
				report("large_result", err, nil)
				break
			}
			count++
		}
		rows.Close()
		report("large_result", rows.Err(), count)
	}

	err = conn.Exec(ctx, "SELECT * FROM rhythm.no_such_table")
	if err == nil {
		report("error", fmt.Errorf("no error for a missing table"), nil)
	} else {
		report("error", nil, err.Error())
	}
	err = conn.Exec(ctx, "DROP TABLE rhythm.events")
	if err == nil {
		report("write_refused", fmt.Errorf("DROP TABLE went through"), nil)
	} else {
		report("write_refused", nil, err.Error())
	}
}
