// The analyst catalogue through ClickHouse's JDBC driver (com.clickhouse:jdbc-v2, what
// DBeaver, DataGrip, Metabase and Tableau use): one JSON line per call. Run by
// tests/integration/test_analyst_drivers.py with `java -cp <jars> JdbcCatalogue.java URL USER PASSWORD`.
import java.sql.*;
import java.util.*;

public class JdbcCatalogue {
    interface Call { Object run() throws Exception; }

    static String quote(Object value) {
        String s = String.valueOf(value).replace("\\", "\\\\").replace("\"", "\\\"")
            .replace("\n", "\\n").replace("\t", "\\t").replace("\r", "");
        return "\"" + s + "\"";
    }

    static void call(String name, Call body) {
        try {
            Object detail = body.run();
            System.out.println("{\"call\":" + quote(name) + ",\"ok\":true,\"detail\":" + quote(detail) + "}");
        } catch (Throwable e) {
            System.out.println("{\"call\":" + quote(name) + ",\"ok\":false,\"detail\":" + quote(e) + "}");
        }
        System.out.flush();
    }

    static List<String> column(ResultSet rs, String label) throws SQLException {
        List<String> out = new ArrayList<>();
        while (rs.next()) out.add(rs.getString(label));
        rs.close();
        return out;
    }

    static String expectError(String sql, Connection conn) throws Exception {
        try (Statement st = conn.createStatement()) {
            st.execute(sql);
        } catch (SQLException e) {
            return e.getMessage();
        }
        throw new AssertionError("no error for " + sql);
    }

    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        props.setProperty("user", args[1]);
        props.setProperty("password", args[2]);
        Connection[] holder = new Connection[1];
        call("connect", () -> {
            Driver driver = (Driver) Class.forName("com.clickhouse.jdbc.Driver")
                .getDeclaredConstructor().newInstance();
            holder[0] = driver.connect(args[0], props);
            return holder[0].isValid(10);
        });
        Connection conn = holder[0];
        if (conn == null) return;
        DatabaseMetaData meta = conn.getMetaData();
        call("version", () -> meta.getDatabaseProductName() + " " + meta.getDatabaseProductVersion());
        call("databases", () -> column(meta.getSchemas(), "TABLE_SCHEM"));
        call("tables", () -> column(meta.getTables(null, "rhythm", "%", null), "TABLE_NAME"));
        call("columns", () -> column(meta.getColumns(null, "rhythm", "events", "%"), "COLUMN_NAME"));
        call("view", () -> {
            try (Statement st = conn.createStatement();
                 ResultSet rs = st.executeQuery("SELECT kind, entity_id, open_for_s FROM rhythm.open_alerts")) {
                int n = 0;
                while (rs.next()) n++;
                return n + " rows, " + rs.getMetaData().getColumnCount() + " columns";
            }
        });
        call("parameterised", () -> {
            try (PreparedStatement ps = conn.prepareStatement(
                    "SELECT count() FROM rhythm.events FINAL WHERE tenant = ? AND verb = ?")) {
                ps.setString(1, "acme");
                ps.setString(2, "viewed");
                try (ResultSet rs = ps.executeQuery()) {
                    rs.next();
                    return rs.getLong(1);
                }
            }
        });
        call("time_series", () -> {
            try (Statement st = conn.createStatement();
                 ResultSet rs = st.executeQuery("SELECT toStartOfHour(occurred_at) AS h, count() AS n "
                     + "FROM rhythm.events FINAL GROUP BY h ORDER BY h")) {
                int points = 0;
                long total = 0;
                while (rs.next()) {
                    rs.getTimestamp("h");
                    total += rs.getLong("n");
                    points++;
                }
                return points + " points, " + total + " events";
            }
        });
        call("large_result", () -> {
            try (Statement st = conn.createStatement();
                 ResultSet rs = st.executeQuery("SELECT number, toString(number) AS s FROM system.numbers LIMIT 1000000")) {
                long n = 0;
                while (rs.next()) {
                    rs.getString(2);
                    n++;
                }
                return n;
            }
        });
        call("error", () -> expectError("SELECT * FROM rhythm.no_such_table", conn));
        call("write_refused", () -> expectError("DROP TABLE rhythm.events", conn));
        conn.close();
    }
}
