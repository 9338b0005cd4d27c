// ingest from real PostgreSQL and MariaDB servers (Debian's postgresql and mariadb-server),
// started by the test on loopback in a temporary directory and stopped afterwards. Checks that
// rows arrive, that the password never reaches the records, the rejects, the log or an error.
#include <arpa/inet.h>
#include <fcntl.h>
#include <glob.h>
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <mysql.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "data/ingest_util.h"

extern char** environ;

using namespace ingest_test;
using dsft::data::read_jsonl;
using dsft::data::run_ingest;

namespace {

int free_port() {
  int s = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(s, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(s);
  return ntohs(a.sin_port);
}

std::string find_binary(const std::string& pattern) {
  glob_t g;
  std::string found;
  if (::glob(pattern.c_str(), 0, nullptr, &g) == 0 && g.gl_pathc > 0) found = g.gl_pathv[g.gl_pathc - 1];
  ::globfree(&g);
  return found;
}

int sh(const std::string& cmd) {
  return std::system(cmd.c_str());
}

// Captures what the process writes to stderr (fd 2) while it lives.
class StderrCapture {
 public:
  explicit StderrCapture(const std::string& path) : path_(path) {
    std::fflush(stderr);
    saved_ = ::dup(2);
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ::dup2(fd, 2);
    ::close(fd);
  }
  std::string finish() {
    std::fflush(stderr);
    ::dup2(saved_, 2);
    ::close(saved_);
    return read(path_);
  }

 private:
  std::string path_;
  int saved_;
};

const char* kPassword = "Pw-7f3kq-secret";

// Runs one ingest expected to succeed or fail, and asserts the password appears in none of
// the output, the rejects file, stderr or the error message.
std::string ingest_checked(const dsft::data::IngestOptions& o, const std::string& tmp) {
  StderrCapture cap(tmp + "/stderr.txt");
  std::string err = ingest_error(o);
  std::string log = cap.finish();
  EXPECT_EQ(err.find(kPassword), std::string::npos) << err;
  EXPECT_EQ(log.find(kPassword), std::string::npos) << log;
  for (const std::string& f : {o.output, dsft::data::default_rejects_path(o.output)}) {
    if (std::filesystem::exists(f)) {
      EXPECT_EQ(read(f).find(kPassword), std::string::npos) << f;
    }
  }
  return err;
}

}  // namespace

// ---- PostgreSQL ----

class IngestPostgres : public ::testing::Test {
 protected:
  static inline std::string dir_, pg_ctl_, prefix_;
  static inline int port_ = 0;
  static inline bool up_ = false;

  static void SetUpTestSuite() {
    std::string initdb = find_binary("/usr/lib/postgresql/*/bin/initdb");
    pg_ctl_ = find_binary("/usr/lib/postgresql/*/bin/pg_ctl");
    if (initdb.empty() || pg_ctl_.empty()) return;  // each test fails with the reason
    TempDir* holder = new TempDir;                  // removed in TearDownTestSuite
    dir_ = holder->path();
    delete_later_ = holder;
    // initdb refuses to run as root: run the server as the postgres user CI's package made.
    if (::geteuid() == 0) {
      struct passwd* pw = ::getpwnam("postgres");
      if (!pw) return;
      ::chown(dir_.c_str(), pw->pw_uid, pw->pw_gid);
      prefix_ = "runuser -u postgres -- ";
    }
    write(dir_ + "/pwfile", std::string(kPassword) + "\n");
    sh("chmod 644 " + dir_ + "/pwfile");
    if (sh(prefix_ + initdb + " -D " + dir_ + "/data -U dsft --auth=scram-sha-256 --pwfile=" + dir_ +
           "/pwfile -E UTF8 --locale=C.UTF-8 > " + dir_ + "/initdb.log 2>&1") != 0)
      return;
    port_ = free_port();
    if (sh(prefix_ + pg_ctl_ + " -D " + dir_ + "/data -l " + dir_ + "/server.log -w -t 60 -o \"-k " + dir_ +
           " -p " + std::to_string(port_) + " -c listen_addresses=127.0.0.1 -c fsync=off\" start > " + dir_ +
           "/pg_ctl.log 2>&1") != 0)
      return;
    up_ = true;
    std::string conninfo =
        "host=127.0.0.1 port=" + std::to_string(port_) + " user=dsft dbname=postgres password=" + kPassword;
    PGconn* c = PQconnectdb(conninfo.c_str());
    const char* sql =
        "CREATE TABLE products(id int PRIMARY KEY, name text, spec text);"
        "INSERT INTO products VALUES (1, '螺丝', 'M3 不锈钢'), (2, 'bolt', NULL), (3, 'nut', 'M4');"
        "CREATE TABLE many AS SELECT g AS n, 'row ' || g AS label FROM generate_series(1, 20000) g;";
    PGresult* r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) up_ = false;
    PQclear(r);
    PQfinish(c);
  }

  static void TearDownTestSuite() {
    if (!dir_.empty() && !pg_ctl_.empty())
      sh(prefix_ + pg_ctl_ + " -D " + dir_ + "/data -m immediate -w stop > /dev/null 2>&1");
    delete delete_later_;
    delete_later_ = nullptr;
  }

  void SetUp() override {
    ASSERT_TRUE(up_) << "PostgreSQL could not be started (install Debian's postgresql; logs in " << dir_
                     << ")";
  }
  std::string url(bool with_password = false) const {
    return "postgresql://dsft" + std::string(with_password ? std::string(":") + kPassword : "") +
           "@127.0.0.1:" + std::to_string(port_) + "/postgres";
  }
  static inline TempDir* delete_later_ = nullptr;
};

TEST_F(IngestPostgres, RowsThroughTemplateWithPasswordFromEnvironment) {
  TempDir d;
  ::setenv("DSFT_TEST_PGPASS", kPassword, 1);
  auto o = options({url()}, d / "out.jsonl");
  o.query = "SELECT id, name, spec FROM products ORDER BY id";
  o.text_template = "产品{name}的规格是{spec}";
  o.password_env = "DSFT_TEST_PGPASS";
  std::string err = ingest_checked(o, d.path());
  EXPECT_NE(err.find(url() + ":row 2"), std::string::npos) << err;  // spec is NULL
  o.skip_missing = true;
  EXPECT_EQ(ingest_checked(o, d.path()), "");
  auto recs = read_jsonl(d / "out.jsonl");
  ASSERT_EQ(recs.size(), 2u);
  EXPECT_EQ(recs[0]["text"], "产品螺丝的规格是M3 不锈钢");
  EXPECT_EQ(recs[0]["source"], url() + ":row 1");
  EXPECT_EQ(read_jsonl(d / "out.rejects.jsonl").size(), 1u);
  ::unsetenv("DSFT_TEST_PGPASS");
}

TEST_F(IngestPostgres, PasswordInUrlOrPgpasswordNeverShows) {
  TempDir d;
  auto o = options({url(true)}, d / "out.jsonl");
  o.query = "SELECT n, label FROM many ORDER BY n";  // streamed in single-row mode
  EXPECT_EQ(ingest_checked(o, d.path()), "");
  auto recs = read_jsonl(d / "out.jsonl");
  ASSERT_EQ(recs.size(), 20000u);
  EXPECT_EQ(recs[19999]["text"], "n: 20000\nlabel: row 20000");
  EXPECT_EQ(recs[0]["source"], url() + ":row 1");

  ::setenv("PGPASSWORD", kPassword, 1);
  o.sources = {url()};
  o.query = "SELECT name FROM products WHERE id = 3";
  EXPECT_EQ(ingest_checked(o, d.path()), "");
  EXPECT_EQ(read_jsonl(d / "out.jsonl").at(0)["text"], "name: nut");
  ::unsetenv("PGPASSWORD");

  // Failures name the server without the password.
  o.sources = {url(true)};
  o.query = "SELECT * FROM no_such_table";
  std::string err = ingest_checked(o, d.path());
  EXPECT_NE(err.find("no_such_table"), std::string::npos) << err;
  EXPECT_NE(err.find(url()), std::string::npos) << err;
  o.sources = {"postgresql://dsft:wrong-" + std::string(kPassword) + "@127.0.0.1:" + std::to_string(port_) +
               "/postgres"};
  o.query = "SELECT 1";
  err = ingest_checked(o, d.path());
  EXPECT_NE(err.find("cannot connect"), std::string::npos) << err;
  EXPECT_FALSE(std::filesystem::exists(d / "out.jsonl.tmp"));
}

// ---- MariaDB ----

class IngestMariadb : public ::testing::Test {
 protected:
  static inline std::string dir_;
  static inline int port_ = 0;
  static inline pid_t pid_ = -1;
  static inline bool up_ = false;
  static inline TempDir* holder_ = nullptr;

  static void SetUpTestSuite() {
    std::string install = find_binary("/usr/bin/mariadb-install-db");
    std::string server = find_binary("/usr/sbin/mariadbd");
    if (install.empty() || server.empty()) return;
    holder_ = new TempDir;
    dir_ = holder_->path();
    // As root the server must be told to stay root (CI); otherwise it runs as the caller.
    struct passwd* me = ::getpwuid(::geteuid());
    std::string user = me ? me->pw_name : "root";
    if (sh(install + " --no-defaults --datadir=" + dir_ + "/data --auth-root-authentication-method=normal " +
           "--skip-test-db --user=" + user + " > " + dir_ + "/install.log 2>&1") != 0)
      return;
    port_ = free_port();
    std::vector<std::string> args = {server,
                                     "--no-defaults",
                                     "--datadir=" + dir_ + "/data",
                                     "--socket=" + dir_ + "/sock",
                                     "--port=" + std::to_string(port_),
                                     "--bind-address=127.0.0.1",
                                     "--user=" + user,
                                     "--log-error=" + dir_ + "/server.log",
                                     "--skip-log-bin",
                                     "--innodb-buffer-pool-size=16M",
                                     "--pid-file=" + dir_ + "/pid"};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t fa;  // the server's own chatter goes to its log, not the test output
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    int rc = ::posix_spawn(&pid_, server.c_str(), &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) {
      pid_ = -1;
      return;
    }
    // Wait for the socket, then create the data and a user that logs in over TCP with a password.
    MYSQL* m = nullptr;
    for (int i = 0; i < 300 && !m; ++i) {
      MYSQL* c = mysql_init(nullptr);
      if (mysql_real_connect(c, nullptr, "root", nullptr, nullptr, 0, (dir_ + "/sock").c_str(), 0)) {
        m = c;
      } else {
        mysql_close(c);
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
    }
    if (!m) return;
    mysql_options(m, MYSQL_SET_CHARSET_NAME, "utf8mb4");
    mysql_set_character_set(m, "utf8mb4");
    std::vector<std::string> sql = {
        "CREATE DATABASE shop CHARACTER SET utf8mb4",
        std::string("CREATE USER 'dsft'@'127.0.0.1' IDENTIFIED BY '") + kPassword + "'",
        "GRANT SELECT ON shop.* TO 'dsft'@'127.0.0.1'",
        "CREATE TABLE shop.faq(id INT PRIMARY KEY, q TEXT, a TEXT)",
        "INSERT INTO shop.faq VALUES (1, '保修期多久？', '两年。'), (2, 'Return policy?', NULL), (3, "
        "'Colours?', 'Red and blue.')"};
    up_ = true;
    for (const auto& s : sql)
      if (mysql_query(m, s.c_str()) != 0) up_ = false;
    mysql_close(m);
  }

  static void TearDownTestSuite() {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      int st;
      for (int i = 0; i < 300; ++i) {
        if (::waitpid(pid_, &st, WNOHANG) == pid_) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        if (i == 299) {
          ::kill(pid_, SIGKILL);
          ::waitpid(pid_, &st, 0);
        }
      }
      pid_ = -1;
    }
    delete holder_;
    holder_ = nullptr;
  }

  void SetUp() override {
    ASSERT_TRUE(up_) << "MariaDB could not be started (install Debian's mariadb-server; logs in " << dir_
                     << ")";
  }
  std::string url() const { return "mysql://dsft@127.0.0.1:" + std::to_string(port_) + "/shop"; }
};

TEST_F(IngestMariadb, InstructionOutputPairsAndPasswordNeverShows) {
  TempDir d;
  ::setenv("MYSQL_PWD", kPassword, 1);
  auto o = options({url()}, d / "out.jsonl");
  o.query = "SELECT id, q, a FROM faq ORDER BY id";
  o.instruction_template = "{q}";
  o.output_template = "{a}";
  o.skip_missing = true;
  EXPECT_EQ(ingest_checked(o, d.path()), "");
  auto recs = read_jsonl(d / "out.jsonl");
  ASSERT_EQ(recs.size(), 2u);
  EXPECT_EQ(recs[0]["instruction"], "保修期多久？");
  EXPECT_EQ(recs[0]["output"], "两年。");
  EXPECT_EQ(recs[0]["source"], url() + ":row 1");
  auto rej = read_jsonl(d / "out.rejects.jsonl");
  ASSERT_EQ(rej.size(), 1u);
  EXPECT_EQ(rej[0]["source"], url() + ":row 2");
  ::unsetenv("MYSQL_PWD");

  // --password-env and a password in the URL; errors never repeat it.
  ::setenv("DSFT_TEST_MYPASS", kPassword, 1);
  o.password_env = "DSFT_TEST_MYPASS";
  o.query = "SELECT nope FROM faq";
  std::string err = ingest_checked(o, d.path());
  EXPECT_NE(err.find("nope"), std::string::npos) << err;
  o.password_env.clear();
  o.sources = {"mysql://dsft:" + std::string(kPassword) + "x@127.0.0.1:" + std::to_string(port_) + "/shop"};
  o.query = "SELECT 1";
  err = ingest_checked(o, d.path());
  EXPECT_NE(err.find("cannot connect to " + url()), std::string::npos) << err;
  ::unsetenv("DSFT_TEST_MYPASS");
}
