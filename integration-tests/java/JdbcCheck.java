// pgJDBC through Causeway: server-side prepared statements (after prepareThreshold uses,
// named S_n statements), batches, transactions, read-only connections and an error inside
// a transaction, from several threads with their own connections.
//
// Usage: java -cp /usr/share/java/postgresql.jar JdbcCheck.java URL USER PASSWORD TABLE [readback]
// TABLE is dropped and recreated. With `readback`, nothing is written: a run's rows are read
// back through prepared statements and checked. Exits non-zero on the first failure.

import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Properties;

public class JdbcCheck {
    static final int WORKERS = 8;
    static final int ROUNDS = 60;
    static String url;
    static Properties props = new Properties();
    static String table;

    static void check(boolean ok, String what) {
        if (!ok) {
            throw new AssertionError(what);
        }
    }

    static long count(Connection conn, String sql, int worker) throws SQLException {
        try (PreparedStatement ps = conn.prepareStatement(sql)) {
            ps.setInt(1, worker);
            try (ResultSet rs = ps.executeQuery()) {
                rs.next();
                return rs.getLong(1);
            }
        }
    }

    static void worker(int n) throws SQLException {
        try (Connection conn = DriverManager.getConnection(url, props)) {
            String countSql = "SELECT count(*) FROM " + table + " WHERE worker = ?";
            try (PreparedStatement times = conn.prepareStatement("SELECT ?::int * 4");
                 PreparedStatement insert = conn.prepareStatement(
                         "INSERT INTO " + table + " (worker, i) VALUES (?, ?)")) {
                for (int i = 0; i < ROUNDS; i++) {
                    // Past prepareThreshold (5) these run as named server-side statements.
                    times.setInt(1, i);
                    try (ResultSet rs = times.executeQuery()) {
                        rs.next();
                        check(rs.getInt(1) == i * 4, "times " + i);
                    }
                    insert.setInt(1, n);
                    insert.setInt(2, i);
                    check(insert.executeUpdate() == 1, "insert " + i);
                    // Read-your-writes on this connection.
                    if (i % 10 == 0) {
                        long seen = count(conn, countSql, n);
                        check(seen == i + 1, "read-your-writes: " + seen + " after " + (i + 1));
                    }
                }
            }
            // A transaction with a batch, then a failed one that leaves nothing behind.
            conn.setAutoCommit(false);
            try (PreparedStatement insert = conn.prepareStatement(
                    "INSERT INTO " + table + " (worker, i) VALUES (?, ?)")) {
                for (int k = 1; k <= 5; k++) {
                    insert.setInt(1, n);
                    insert.setInt(2, -k);
                    insert.addBatch();
                }
                insert.executeBatch();
            }
            check(count(conn, countSql, n) == ROUNDS + 5, "count inside the transaction");
            conn.commit();
            try (Statement st = conn.createStatement()) {
                st.executeUpdate("INSERT INTO " + table + " (worker, i) VALUES (" + n + ", 1000)");
                st.executeQuery("SELECT 1/0");
                throw new AssertionError("expected division by zero");
            } catch (SQLException e) {
                check("22012".equals(e.getSQLState()), "division by zero: " + e.getSQLState());
                conn.rollback();
            }
            conn.setAutoCommit(true);
            // A read-only connection: still sees this connection's writes.
            conn.setReadOnly(true);
            check(count(conn, countSql, n) == ROUNDS + 5, "read-only count");
            conn.setReadOnly(false);
        }
    }

    static void readback() throws SQLException {
        try (Connection conn = DriverManager.getConnection(url, props)) {
            String perWorker = "SELECT count(*) FROM " + table + " WHERE worker = ?";
            for (int round = 0; round < 5; round++) {
                for (int n = 0; n < WORKERS; n++) {
                    long seen = count(conn, perWorker, n);
                    check(seen == ROUNDS + 5, "readback worker " + n + ": " + seen);
                }
            }
        }
        System.out.println("jdbc readback ok: " + WORKERS + " workers' rows");
    }

    public static void main(String[] args) throws Exception {
        url = args[0];
        props.setProperty("user", args[1]);
        props.setProperty("password", args[2]);
        table = args[3];
        check(table.matches("[a-z_][a-z0-9_]*"), "table name");
        if (args.length > 4 && args[4].equals("readback")) {
            readback();
            return;
        }
        try (Connection setup = DriverManager.getConnection(url, props);
             Statement st = setup.createStatement()) {
            st.execute("DROP TABLE IF EXISTS " + table);
            st.execute("CREATE TABLE " + table + " (worker int, i int)");
        }
        List<String> failures = Collections.synchronizedList(new ArrayList<>());
        List<Thread> threads = new ArrayList<>();
        for (int n = 0; n < WORKERS; n++) {
            final int worker = n;
            Thread t = new Thread(() -> {
                try {
                    worker(worker);
                } catch (Throwable e) {
                    failures.add("worker " + worker + ": " + e);
                }
            });
            threads.add(t);
            t.start();
        }
        for (Thread t : threads) {
            t.join();
        }
        if (!failures.isEmpty()) {
            failures.forEach(System.out::println);
            System.exit(1);
        }
        System.out.println("jdbc ok: " + WORKERS + " workers x " + ROUNDS + " rounds");
    }
}
