// The pgJDBC guide of docs/integration.md, run against Causeway with lagging replicas.
//
// Usage: java -cp /usr/share/java/postgresql.jar JdbcGuide.java URL USER PASSWORD PRIMARY_PORT
// Expects table guide_notes (id serial, user_id int, body text) on every node, and replicas
// that apply WAL about a second late. The code between `guide:` markers is shown in
// docs/integration.md verbatim (a test compares them). Exits non-zero on the first failure.

import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;

public class JdbcGuide {
    static String url;
    static String user;
    static String password;
    static int primaryPort;

    static void check(boolean ok, String what) {
        if (!ok) {
            throw new AssertionError(what);
        }
    }

    /** Stands in for a pool's DataSource.getConnection(): autocommit on, as HikariCP's. */
    static Connection getConnection() throws SQLException {
        return DriverManager.getConnection(url, user, password);
    }

    // guide:begin jdbc-connection
    /** A connection for one request, its Causeway session named after the end user. */
    static Connection requestConnection(long userId) throws SQLException {
        Connection conn = getConnection();  // e.g. dataSource.getConnection(); autocommit on
        try (PreparedStatement set = conn.prepareStatement("SET causeway.session = ?")) {
            set.setString(1, "user-" + userId);  // a bind parameter: never spliced into SQL
            set.execute();
        }
        return conn;
    }
    // guide:end jdbc-connection

    static String node(Connection conn, String sql) throws SQLException {
        try (Statement st = conn.createStatement(); ResultSet rs = st.executeQuery(sql)) {
            rs.next();
            return rs.getInt(1) == primaryPort ? "primary" : "replica";
        }
    }

    static int notesOf(Connection conn, long userId) throws SQLException {
        try (PreparedStatement ps =
                conn.prepareStatement("SELECT count(*) FROM guide_notes WHERE user_id = ?")) {
            ps.setLong(1, userId);
            try (ResultSet rs = ps.executeQuery()) {
                rs.next();
                return rs.getInt(1);
            }
        }
    }

    public static void main(String[] args) throws Exception {
        url = args[0];
        user = args[1];
        password = args[2];
        primaryPort = Integer.parseInt(args[3]);
        // Request 1 (POST) and request 2 (GET) of user 42, on two connections.
        try (Connection first = requestConnection(42)) {
            try (PreparedStatement ps = first.prepareStatement(
                    "INSERT INTO guide_notes (user_id, body) VALUES (?, ?)")) {
                ps.setLong(1, 42);
                ps.setString(2, "jdbc");
                ps.executeUpdate();
            }
        }
        try (Connection second = requestConnection(42)) {
            check(notesOf(second, 42) == 1, "read-your-writes across connections failed");
        }
        // An unnamed connection reads a replica, which misses the write.
        try (Connection unnamed = getConnection()) {
            check(node(unnamed, "SELECT inet_server_port()").equals("replica"), "unnamed read");
            check(notesOf(unnamed, 42) == 0, "expected the lagging replica to miss the write");
        }
        // User 7 wrote nothing: replicas; hinted reads and plain transactions: the primary;
        // a read-only transaction: a replica.
        try (Connection conn = requestConnection(7)) {
            for (int i = 0; i < 5; i++) {
                check(node(conn, "SELECT inet_server_port()").equals("replica"), "user 7 read");
            }
            conn.setReadOnly(true);
            conn.setAutoCommit(false);  // pgJDBC sends BEGIN READ ONLY
            check(node(conn, "SELECT inet_server_port()").equals("replica"), "read-only tx");
            conn.commit();
            conn.setReadOnly(false);
            check(node(conn, "SELECT inet_server_port()").equals("primary"), "transaction");
            conn.commit();
            conn.setAutoCommit(true);
            // guide:begin jdbc-hint
            String port = node(conn, "/* causeway: route=primary */ SELECT inet_server_port()");
            // guide:end jdbc-hint
            check(port.equals("primary"), "the route=primary hint read a replica");
        }
        System.out.println("pgJDBC: all checks passed");
    }
}
