// SQL query results as rows: SQLite (embedded), PostgreSQL (libpq, single-row mode) and
// MySQL/MariaDB (libmariadb, mysql_use_result), all streamed row by row. The password comes from
// the URL, --password-env or the standard variables (PGPASSWORD, MYSQL_PWD) and never reaches a
// record, a log line or an error message: sources are named by the URL without it.
#include <libpq-fe.h>
#include <mysql.h>
#include <sqlite3.h>
#include <xxhash.h>

#include <cstdlib>
#include <cstring>

#include "data/ingest/internal.h"
#include "dsft/util/error.h"
#include "dsft/util/log.h"
#include "dsft/util/strings.h"

namespace dsft::data::ingest {

namespace {

struct Url {
  std::string scheme, user, password, host, db, params;
  int port = 0;
  bool has_password = false;
};

std::string pct_decode(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && std::isxdigit(static_cast<unsigned char>(s[i + 1])) &&
        std::isxdigit(static_cast<unsigned char>(s[i + 2]))) {
      out.push_back(static_cast<char>(std::stoi(std::string(s.substr(i + 1, 2)), nullptr, 16)));
      i += 2;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

Url parse_url(const std::string& url) {
  Url u;
  size_t p = url.find("://");
  if (p == std::string::npos)
    throw UsageError("'" + url_without_password(url) +
                     "' is not a database URL (scheme://user@host:port/db)");
  u.scheme = url.substr(0, p);
  std::string rest = url.substr(p + 3);
  size_t q = rest.find('?');
  if (q != std::string::npos) {
    u.params = rest.substr(q + 1);
    rest = rest.substr(0, q);
  }
  size_t slash = rest.find('/');
  std::string authority = rest.substr(0, slash);
  if (slash != std::string::npos) u.db = pct_decode(rest.substr(slash + 1));
  size_t at = authority.rfind('@');
  if (at != std::string::npos) {
    std::string userinfo = authority.substr(0, at);
    authority = authority.substr(at + 1);
    size_t colon = userinfo.find(':');
    u.user = pct_decode(userinfo.substr(0, colon));
    if (colon != std::string::npos) {
      u.password = pct_decode(userinfo.substr(colon + 1));
      u.has_password = true;
    }
  }
  size_t colon = authority.rfind(':');
  if (colon != std::string::npos && authority.find(']') == std::string::npos) {
    try {
      u.port = std::stoi(authority.substr(colon + 1));
    } catch (...) {
      throw UsageError("the port in '" + url_without_password(url) + "' is not a number");
    }
    u.host = authority.substr(0, colon);
  } else {
    u.host = authority;
  }
  return u;
}

// The password from --password-env (must be set when named) or the standard variable.
std::string password_from_env(const IngestOptions& opt, const char* standard, bool* found) {
  *found = false;
  if (!opt.password_env.empty()) {
    const char* v = std::getenv(opt.password_env.c_str());
    if (!v) throw UsageError("--password-env " + opt.password_env + ": that environment variable is not set");
    *found = true;
    return v;
  }
  if (standard) {
    const char* v = std::getenv(standard);
    if (v) {
      *found = true;
      return v;
    }
  }
  return "";
}

void require_query(const IngestOptions& opt, const std::string& name, const std::string& hint) {
  if (util::trim(opt.query).empty())
    throw UsageError(name + " is a database: pass --query 'SELECT ...' to say which rows to ingest" + hint);
}

std::string one_line(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  for (char& c : s)
    if (c == '\n') c = ' ';
  return util::redact(s);
}

}  // namespace

std::string url_without_password(const std::string& url) {
  size_t p = url.find("://");
  if (p == std::string::npos) return url;
  size_t start = p + 3;
  size_t end = url.find_first_of("/?", start);
  std::string authority = url.substr(start, end == std::string::npos ? std::string::npos : end - start);
  std::string tail = end == std::string::npos ? "" : url.substr(end);
  size_t q = tail.find('?');
  if (q != std::string::npos) tail = tail.substr(0, q);  // parameters may carry a password
  size_t at = authority.rfind('@');
  if (at != std::string::npos) {
    std::string userinfo = authority.substr(0, at);
    size_t colon = userinfo.find(':');
    if (colon != std::string::npos) userinfo = userinfo.substr(0, colon);
    authority = userinfo + "@" + authority.substr(at + 1);
  }
  return url.substr(0, start) + authority + tail;
}

std::string short_hash(std::string_view s) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%08x", static_cast<unsigned>(XXH64(s.data(), s.size(), 0) & 0xffffffffu));
  return buf;
}

// Feeds rows of one result set to the converter with ids "<name>:q<hash>:row<n>".
class ResultRows {
 public:
  ResultRows(const std::string& name, const IngestOptions& opt, Sink& sink)
      : rows_(opt, sink),
        id_prefix_(name + ":q" + short_hash(opt.query) + ":row"),
        source_prefix_(name + ":row ") {}
  void columns(const std::vector<std::string>& cols, const std::string& name) {
    rows_.set_columns(cols, name);
  }
  void row(size_t n, const std::vector<std::string_view>& values, const std::vector<char>& null) {
    std::string k = std::to_string(n);
    rows_.convert(nullptr, values, null, id_prefix_ + k, source_prefix_ + k);
  }

 private:
  RowConverter rows_;
  std::string id_prefix_, source_prefix_;
};

void ingest_sqlite(const std::string& path_or_url, const std::string& name, const IngestOptions& opt,
                   Sink& sink) {
  std::string path = path_or_url;
  if (util::starts_with(path, "sqlite://"))
    path = path.substr(9);
  else if (util::starts_with(path, "sqlite:"))
    path = path.substr(7);
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
    std::string msg = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    throw Error("cannot open SQLite database " + path + ": " + msg);
  }
  std::unique_ptr<sqlite3, int (*)(sqlite3*)> guard(db, &sqlite3_close);
  if (util::trim(opt.query).empty()) {
    std::vector<std::string> tables;
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(db, "SELECT name FROM sqlite_master WHERE type='table' ORDER BY name", -1, &st,
                           nullptr) == SQLITE_OK) {
      while (sqlite3_step(st) == SQLITE_ROW)
        tables.emplace_back(reinterpret_cast<const char*>(sqlite3_column_text(st, 0)));
      sqlite3_finalize(st);
    }
    require_query(opt, name, tables.empty() ? "" : " (its tables: " + util::join(tables, ", ") + ")");
  }
  sqlite3_stmt* stmt = nullptr;
  if (sqlite3_prepare_v2(db, opt.query.c_str(), -1, &stmt, nullptr) != SQLITE_OK || !stmt)
    throw Error(name + ": the query failed: " + std::string(sqlite3_errmsg(db)));
  std::unique_ptr<sqlite3_stmt, int (*)(sqlite3_stmt*)> stmt_guard(stmt, &sqlite3_finalize);
  int ncol = sqlite3_column_count(stmt);
  if (ncol == 0) throw Error(name + ": the query returns no columns (use a SELECT)");
  std::vector<std::string> cols;
  for (int i = 0; i < ncol; ++i) cols.emplace_back(sqlite3_column_name(stmt, i));
  ResultRows rows(name, opt, sink);
  rows.columns(cols, name);
  std::vector<std::string_view> values(ncol);
  std::vector<char> null(ncol);
  size_t n = 0;
  int rc;
  while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
    ++n;
    for (int i = 0; i < ncol; ++i) {
      int type = sqlite3_column_type(stmt, i);
      null[i] = type == SQLITE_NULL;
      if (null[i]) {
        values[i] = {};
        continue;
      }
      // Numbers are shown as SQLite prints them; BLOBs pass when they hold UTF-8 text.
      const char* p = type == SQLITE_BLOB ? static_cast<const char*>(sqlite3_column_blob(stmt, i))
                                          : reinterpret_cast<const char*>(sqlite3_column_text(stmt, i));
      values[i] = std::string_view(p ? p : "", static_cast<size_t>(sqlite3_column_bytes(stmt, i)));
    }
    rows.row(n, values, null);
  }
  if (rc != SQLITE_DONE)
    throw Error(name + ": reading the query's rows failed at row " + std::to_string(n + 1) + ": " +
                sqlite3_errmsg(db));
}

void ingest_postgres(const std::string& url, const IngestOptions& opt, Sink& sink) {
  const std::string name = url_without_password(url);
  require_query(opt, name, "");
  bool have_pw = false;
  std::string pw = password_from_env(opt, nullptr, &have_pw);  // libpq reads PGPASSWORD itself
  std::string conninfo = url;
  if (util::starts_with(conninfo, "postgres://") == false &&
      util::starts_with(conninfo, "postgresql://") == false)
    throw UsageError("'" + name + "' is not a postgresql:// URL");
  // Keywords after "dbname" (the expanded URL) override what the URL says.
  std::vector<const char*> keys = {"dbname", "connect_timeout", "client_encoding"};
  std::vector<const char*> vals = {conninfo.c_str(), "10", "UTF8"};
  if (have_pw) {
    keys.push_back("password");
    vals.push_back(pw.c_str());
  }
  keys.push_back(nullptr);
  vals.push_back(nullptr);
  PGconn* conn = PQconnectdbParams(keys.data(), vals.data(), 1);
  std::unique_ptr<PGconn, void (*)(PGconn*)> guard(conn, &PQfinish);
  if (!conn || PQstatus(conn) != CONNECTION_OK)
    throw Error("cannot connect to " + name + ": " + one_line(conn ? PQerrorMessage(conn) : "out of memory"));
  if (!PQsendQuery(conn, opt.query.c_str()))
    throw Error(name + ": the query failed: " + one_line(PQerrorMessage(conn)));
  PQsetSingleRowMode(conn);  // stream: one PGresult per row instead of the whole set in memory
  ResultRows rows(name, opt, sink);
  bool have_columns = false;
  size_t n = 0;
  std::vector<std::string_view> values;
  std::vector<char> null;
  std::string error;
  while (PGresult* res = PQgetResult(conn)) {
    std::unique_ptr<PGresult, void (*)(PGresult*)> rg(res, &PQclear);
    ExecStatusType st = PQresultStatus(res);
    if (st == PGRES_SINGLE_TUPLE || st == PGRES_TUPLES_OK) {
      int ncol = PQnfields(res);
      if (!have_columns && error.empty()) {
        std::vector<std::string> cols;
        for (int i = 0; i < ncol; ++i) cols.emplace_back(PQfname(res, i));
        rows.columns(cols, name);
        have_columns = true;
      }
      for (int r = 0; r < PQntuples(res) && error.empty(); ++r) {
        ++n;
        values.assign(ncol, {});
        null.assign(ncol, 0);
        for (int i = 0; i < ncol; ++i) {
          null[i] = PQgetisnull(res, r, i);
          if (!null[i]) values[i] = std::string_view(PQgetvalue(res, r, i), PQgetlength(res, r, i));
        }
        rows.row(n, values, null);
      }
    } else if (st == PGRES_COMMAND_OK) {
      if (error.empty()) error = "the query returns no rows (use a SELECT)";
    } else if (error.empty()) {
      error = "the query failed: " + one_line(PQresultErrorMessage(res));
    }
  }
  if (!error.empty()) throw Error(name + ": " + error);
}

void ingest_mysql(const std::string& url, const IngestOptions& opt, Sink& sink) {
  const std::string name = url_without_password(url);
  require_query(opt, name, "");
  Url u = parse_url(url);
  std::string socket;
  for (const auto& kv : util::split(u.params, '&'))
    if (util::starts_with(kv, "socket=")) socket = pct_decode(kv.substr(7));
  bool have_pw = u.has_password;
  std::string pw = u.password;
  if (!have_pw) pw = password_from_env(opt, "MYSQL_PWD", &have_pw);
  MYSQL* m = mysql_init(nullptr);
  if (!m) throw Error("cannot initialise the MySQL client library");
  std::unique_ptr<MYSQL, void (*)(MYSQL*)> guard(m, &mysql_close);
  mysql_options(m, MYSQL_SET_CHARSET_NAME, "utf8mb4");
  unsigned timeout = 10;
  mysql_options(m, MYSQL_OPT_CONNECT_TIMEOUT, &timeout);
  if (!mysql_real_connect(m, u.host.empty() ? nullptr : u.host.c_str(),
                          u.user.empty() ? nullptr : u.user.c_str(), have_pw ? pw.c_str() : nullptr,
                          u.db.empty() ? nullptr : u.db.c_str(), static_cast<unsigned>(u.port),
                          socket.empty() ? nullptr : socket.c_str(), 0))
    throw Error("cannot connect to " + name + ": " + one_line(mysql_error(m)));
  if (mysql_real_query(m, opt.query.data(), opt.query.size()) != 0)
    throw Error(name + ": the query failed: " + one_line(mysql_error(m)));
  MYSQL_RES* res = mysql_use_result(m);  // stream rows from the server
  if (!res) {
    if (mysql_field_count(m) == 0) throw Error(name + ": the query returns no rows (use a SELECT)");
    throw Error(name + ": the query failed: " + one_line(mysql_error(m)));
  }
  std::unique_ptr<MYSQL_RES, void (*)(MYSQL_RES*)> rg(res, &mysql_free_result);
  unsigned ncol = mysql_num_fields(res);
  MYSQL_FIELD* fields = mysql_fetch_fields(res);
  std::vector<std::string> cols;
  for (unsigned i = 0; i < ncol; ++i) cols.emplace_back(fields[i].name);
  ResultRows rows(name, opt, sink);
  rows.columns(cols, name);
  std::vector<std::string_view> values(ncol);
  std::vector<char> null(ncol);
  size_t n = 0;
  while (MYSQL_ROW row = mysql_fetch_row(res)) {
    unsigned long* len = mysql_fetch_lengths(res);
    ++n;
    for (unsigned i = 0; i < ncol; ++i) {
      null[i] = row[i] == nullptr;
      values[i] = null[i] ? std::string_view() : std::string_view(row[i], len[i]);
    }
    rows.row(n, values, null);
  }
  if (mysql_errno(m) != 0)
    throw Error(name + ": reading the query's rows failed: " + one_line(mysql_error(m)));
}

}  // namespace dsft::data::ingest
