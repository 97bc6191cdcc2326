//! Whole-server disaster recovery (issue 13): a server with application roles and two databases
//! backed up by one job, brought back into brand-new clusters from the backup directory alone.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;

const BIN: &str = "/usr/lib/postgresql/15/bin";

fn config_file(dir: &Path, text: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("pgdrive.toml");
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// The odd database name of the corpus: quotes, a space, unicode, upper case.
const ODD: &str = "Odd \"Db\" ü";

/// The source server of the issue: owner roles, a group with members, a role with SET
/// search_path, ALTER DATABASE SET, ALTER ROLE IN DATABASE SET, a database-level GRANT, a
/// comment, and a LATIN1 database.
fn source_server() -> Cluster {
    let c = Cluster::start();
    c.exec(
        "postgres",
        r#"CREATE ROLE app LOGIN PASSWORD 'app-secret-pw';
           CREATE ROLE "Report Group" NOLOGIN;
           CREATE ROLE reader LOGIN IN ROLE "Report Group";
           CREATE ROLE "Writer" LOGIN IN ROLE "Report Group";
           ALTER ROLE reader SET search_path = app, public;"#,
    );
    c.exec(
        "postgres",
        "CREATE DATABASE shop OWNER app TEMPLATE template0 ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C'",
    );
    c.exec(
        "postgres",
        r#"CREATE DATABASE "Odd ""Db"" ü" OWNER "Writer""#,
    );
    c.exec(
        "postgres",
        r#"ALTER DATABASE shop SET search_path = app, public;
           ALTER DATABASE shop SET statement_timeout = '5min';
           ALTER ROLE reader IN DATABASE shop SET work_mem = '8MB';
           REVOKE ALL ON DATABASE shop FROM PUBLIC;
           GRANT CONNECT ON DATABASE shop TO "Report Group";
           COMMENT ON DATABASE shop IS 'the shop''s data';"#,
    );
    c.exec(
        "shop",
        r#"SET ROLE app;
           CREATE SCHEMA app;
           CREATE TABLE app.orders (id int PRIMARY KEY, note text);
           INSERT INTO app.orders SELECT g, 'order ' || g FROM generate_series(1, 500) g;
           GRANT USAGE ON SCHEMA app TO "Report Group";
           GRANT SELECT ON app.orders TO "Report Group";"#,
    );
    c.exec(
        ODD,
        r#"SET ROLE "Writer";
           CREATE TABLE "Mixed Case" (x int);
           INSERT INTO "Mixed Case" SELECT generate_series(1, 42);"#,
    );
    c
}

/// A PostgreSQL client program's output, less the random keys of its `\restrict` lines.
fn tool(name: &str, args: &[&str]) -> String {
    let out = Command::new(format!("{BIN}/{name}"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{name} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("\\restrict ") && !l.starts_with("\\unrestrict "))
        .collect::<Vec<_>>()
        .join("\n")
}

fn globals_without_passwords(c: &Cluster) -> String {
    tool(
        "pg_dumpall",
        &[
            "--globals-only",
            "--no-role-passwords",
            "-d",
            &c.url("postgres", "postgres"),
        ],
    )
}

fn schema(c: &Cluster, db: &str) -> String {
    tool("pg_dump", &["--schema-only", "-d", &c.url("postgres", db)])
}

/// What `restore --create` must bring back of a database, as one comparable text.
fn database_facts(c: &Cluster, db: &str) -> String {
    let mut client =
        postgres::Client::connect(&c.url("postgres", "postgres"), postgres::NoTls).unwrap();
    let row = client
        .query_one(
            "SELECT pg_get_userbyid(datdba)::text, pg_encoding_to_char(encoding)::text,
                    datcollate::text, coalesce((SELECT string_agg(a::text, ',' ORDER BY a::text) FROM unnest(datacl) a), 'default'),
                    coalesce(shobj_description(oid, 'pg_database'), ''),
                    coalesce((SELECT string_agg(coalesce(r.rolname, '*') || ':' || array_to_string(s.setconfig, '|'), ';' ORDER BY r.rolname NULLS FIRST)
                       FROM pg_db_role_setting s LEFT JOIN pg_roles r ON r.oid = s.setrole
                      WHERE s.setdatabase = d.oid), '')
               FROM pg_database d WHERE datname = $1",
            &[&db],
        )
        .unwrap();
    (0..6)
        .map(|i| row.get::<_, String>(i))
        .collect::<Vec<_>>()
        .join(" / ")
}

fn count(c: &Cluster, db: &str, sql: &str) -> i64 {
    postgres::Client::connect(&c.url("postgres", db), postgres::NoTls)
        .unwrap()
        .query_one(sql, &[])
        .unwrap()
        .get(0)
}

fn back_up(source: &Cluster, user: &str, dir: &Path, format: &str) -> Run {
    let conf = TempDir::new("dr_conf");
    let config = config_file(
        conf.path(),
        &format!(
            "local.dir = \"{}\"\nformat = \"{format}\"\n[jobs.nightly]\nkind = \"daily\"\ndatabases = [\"shop\", \"Odd \\\"Db\\\" ü\"]\n",
            dir.display()
        ),
    );
    run(pgdrive()
        .env("PGDRIVE_CONFIG", &config)
        .env("DATABASE_URL", source.url(user, "postgres"))
        .env("PGDRIVE_PG_DUMP", format!("{BIN}/pg_dump"))
        .args(["backup", "--job", "nightly"]))
}

#[test]
fn restore_all_brings_back_a_whole_server_into_a_fresh_cluster() {
    let source = source_server();
    let dir = TempDir::new("dr_store");
    let r = back_up(&source, "postgres", dir.path(), "plain");
    assert_eq!(r.status, 0, "{r:?}");
    assert!(r.stderr.contains("globals stored"), "{r:?}");
    let globals: Vec<PathBuf> = backup_files(dir.path())
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("-globals-"))
        .collect();
    assert_eq!(globals.len(), 1, "{:?}", backup_files(dir.path()));
    // the database backups name the set and its globals object in their manifests
    for b in backup_files(dir.path()) {
        let sidecar = format!("{}.pgdrive.json", b.display());
        let m: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&sidecar).unwrap()).unwrap();
        assert!(m["properties"]["pgdrive_set"].is_string(), "{m}");
        if !b.to_string_lossy().contains("-globals-") {
            assert!(m["globals"]["object"]["name"].is_string(), "{m}");
            assert!(m["database_properties"]["owner"].is_string(), "{m}");
        }
    }

    // a brand-new server, and nothing but the backup directory
    let target = Cluster::start();
    let r = run(pgdrive()
        .args(["restore", "--all", "--from"])
        .arg(dir.path())
        .args([
            "--job",
            "nightly",
            "--jobs",
            "2",
            "--target-url",
            &target.url("postgres", "postgres"),
        ]));
    assert_eq!(r.status, 0, "{r:?}");
    assert!(!r.stderr.contains("app-secret-pw"), "{r:?}");
    assert_eq!(
        globals_without_passwords(&target),
        globals_without_passwords(&source)
    );
    for db in ["shop", ODD] {
        assert_eq!(schema(&target, db), schema(&source, db), "{db}");
        assert_eq!(
            database_facts(&target, db),
            database_facts(&source, db),
            "{db}"
        );
    }
    assert_eq!(
        count(&target, "shop", "SELECT count(*) FROM app.orders"),
        500
    );
    assert_eq!(
        count(
            &target,
            "shop",
            "SELECT sum(hashtext(note))::int8 FROM app.orders"
        ),
        count(
            &source,
            "shop",
            "SELECT sum(hashtext(note))::int8 FROM app.orders"
        )
    );
    assert_eq!(
        count(&target, ODD, "SELECT count(*) FROM \"Mixed Case\""),
        42
    );
    // the password came back with the role (a superuser's globals carry it)
    assert_eq!(
        count(
            &target,
            "postgres",
            "SELECT count(*) FROM pg_authid WHERE rolname = 'app' AND rolpassword LIKE 'SCRAM-SHA-256$%'"
        ),
        1
    );

    // a second restore --all: the databases exist now, so each is refused, and an existing
    // role's password is never changed
    target.exec(
        "postgres",
        "ALTER ROLE app PASSWORD 'changed-on-the-new-server'",
    );
    let before = count(
        &target,
        "postgres",
        "SELECT hashtext(rolpassword)::int8 FROM pg_authid WHERE rolname = 'app'",
    );
    let again = run(pgdrive()
        .args(["restore", "--all", "--from"])
        .arg(dir.path())
        .args(["--target-url", &target.url("postgres", "postgres")]));
    assert_ne!(again.status, 0, "{again:?}");
    assert!(again.stderr.contains("already exists"), "{again:?}");
    assert_eq!(
        count(
            &target,
            "postgres",
            "SELECT hashtext(rolpassword)::int8 FROM pg_authid WHERE rolname = 'app'"
        ),
        before
    );
}

#[test]
fn no_owner_restores_into_a_cluster_with_none_of_the_roles() {
    let source = source_server();
    // custom archives (pg_restore --no-owner --no-privileges) and plain dumps (the script's
    // ownership and privilege statements are left out)
    for format in ["custom", "plain"] {
        no_owner_restore(&source, format);
    }
}

/// A backup of `source`'s job in `format` into a new directory, and the id of its shop backup.
fn back_up_shop(source: &Cluster, format: &str) -> (TempDir, String) {
    let dir = TempDir::new("dr_store_shop");
    let r = back_up(source, "postgres", dir.path(), format);
    assert_eq!(r.status, 0, "{r:?}");
    let id = backup_files(dir.path())
        .into_iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .find(|n| n.starts_with("shop-"))
        .unwrap();
    (dir, id)
}

fn no_owner_restore(source: &Cluster, format: &str) {
    let (dir, id) = back_up_shop(source, format);
    let bare = Cluster::start();
    // without --no-owner the missing owner is a clear error, and nothing is left behind
    let r = run(pgdrive()
        .args(["restore", &id, "--create", "--from"])
        .arg(dir.path())
        .args(["--target-url", &bare.url("postgres", "shop")]));
    assert_ne!(r.status, 0, "{format}: {r:?}");
    assert_eq!(
        count(
            &bare,
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname = 'shop'"
        ),
        0
    );
    let r = run(pgdrive()
        .args(["restore", &id, "--create", "--no-owner", "--from"])
        .arg(dir.path())
        .args(["--target-url", &bare.url("postgres", "shop")]));
    assert_eq!(r.status, 0, "{format}: {r:?}");
    assert_eq!(count(&bare, "shop", "SELECT count(*) FROM app.orders"), 500);
    // owned by the restoring role, no grants to roles that do not exist
    assert_eq!(
        count(
            &bare,
            "shop",
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = 'app' AND pg_get_userbyid(c.relowner) <> 'postgres'"
        ),
        0,
        "{format}"
    );
    let facts = database_facts(&bare, "shop");
    assert!(facts.starts_with("postgres / LATIN1 / C / "), "{facts}");
    assert!(facts.contains("the shop's data"), "{facts}");
    assert!(
        facts.contains("*:search_path=app, public|statement_timeout=5min"),
        "{facts}"
    );
    assert_eq!(
        count(
            &bare,
            "postgres",
            "SELECT count(*) FROM pg_roles WHERE rolname IN ('app', 'reader')"
        ),
        0
    );
    if format == "custom" {
        // the parallel restore leaves them out as well (pg_restore -j --no-owner --no-privileges)
        let r = run(pgdrive()
            .args([
                "restore",
                &id,
                "--create",
                "--no-owner",
                "--jobs",
                "2",
                "--from",
            ])
            .arg(dir.path())
            .args(["--target-url", &bare.url("postgres", "shop_j2")]));
        assert_eq!(r.status, 0, "{r:?}");
        assert_eq!(
            count(&bare, "shop_j2", "SELECT count(*) FROM app.orders"),
            500
        );
        assert_eq!(
            database_facts(&bare, "shop_j2").split(" / ").next(),
            Some("postgres")
        );
    }
}

#[test]
fn role_map_restores_under_other_names_into_a_cluster_with_none_of_the_old_roles() {
    let source = source_server();
    // a policy naming a role, a row and a quoted table that read like the statements rewritten
    source.exec(
        "shop",
        r#"SET ROLE app;
           INSERT INTO app.orders VALUES (0, 'ALTER TABLE app.orders OWNER TO app;');
           CREATE TABLE app."TO app" (app int);
           GRANT SELECT (app) ON app."TO app" TO reader;
           CREATE POLICY mine ON app.orders FOR SELECT TO "Report Group" USING (note IS DISTINCT FROM 'app');"#,
    );
    for format in ["custom", "plain"] {
        role_map_restore(&source, format);
    }
}

fn role_map_restore(source: &Cluster, format: &str) {
    let (dir, id) = back_up_shop(source, format);
    let bare = Cluster::start();
    bare.exec(
        "postgres",
        r#"CREATE ROLE app_new; CREATE ROLE "Reports 2"; CREATE ROLE reader2;"#,
    );
    let restore = |maps: &[&str]| {
        let mut cmd = pgdrive();
        cmd.args(["restore", &id, "--create", "--from"])
            .arg(dir.path())
            .args(["--target-url", &bare.url("postgres", "shop")]);
        for m in maps {
            cmd.args(["--role-map", m]);
        }
        run(&mut cmd)
    };
    let shop_exists = || {
        count(
            &bare,
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname = 'shop'",
        )
    };
    // a new name the server lacks: refused before anything is created
    let r = restore(&["app=app_new", "Report Group=nobody here"]);
    assert_eq!(r.status, 78, "{format}: {r:?}");
    assert!(r.stderr.contains("nobody here"), "{format}: {}", r.stderr);
    assert_eq!(shop_exists(), 0, "{format}");
    // an old role left unmapped: the restore fails on it, says what to do, and is rolled back
    let r = restore(&["app=app_new", "Report Group=Reports 2"]);
    assert_ne!(r.status, 0, "{format}: {r:?}");
    assert!(r.stderr.contains("--role-map"), "{format}: {}", r.stderr);
    assert_eq!(shop_exists(), 0, "{format}");

    let r = restore(&["app=app_new", "Report Group=Reports 2", "reader=reader2"]);
    assert_eq!(r.status, 0, "{format}: {r:?}");
    let one = |sql: &str| {
        postgres::Client::connect(&bare.url("postgres", "shop"), postgres::NoTls)
            .unwrap()
            .query_one(sql, &[])
            .unwrap()
            .get::<_, String>(0)
    };
    assert_eq!(
        one(
            "SELECT string_agg(DISTINCT pg_get_userbyid(c.relowner)::text, ',') FROM pg_class c
              JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'app'"
        ),
        "app_new",
        "{format}"
    );
    assert_eq!(
        one("SELECT pg_get_userbyid(nspowner)::text FROM pg_namespace WHERE nspname = 'app'"),
        "app_new"
    );
    assert_eq!(
        one(
            r#"SELECT has_table_privilege('Reports 2', 'app.orders', 'SELECT')::text
                  || has_schema_privilege('Reports 2', 'app', 'USAGE')::text
                  || has_column_privilege('reader2', 'app."TO app"', 'app', 'SELECT')::text"#
        ),
        "truetruetrue",
        "{format}"
    );
    assert_eq!(
        one("SELECT array_to_string(polroles::regrole[], ',') FROM pg_policy WHERE polname = 'mine'"),
        "\"Reports 2\"",
        "{format}"
    );
    // the data is the data: the row that reads like a statement arrived as it was
    assert_eq!(
        one("SELECT note FROM app.orders WHERE id = 0"),
        "ALTER TABLE app.orders OWNER TO app;"
    );
    assert_eq!(count(&bare, "shop", "SELECT count(*) FROM app.orders"), 501);
    // the database's own owner, grant and role setting follow the map too
    let facts = database_facts(&bare, "shop");
    assert!(facts.starts_with("app_new / LATIN1 / C / "), "{facts}");
    assert!(facts.contains("\"Reports 2\"=c/app_new"), "{facts}");
    assert!(facts.contains("reader2:work_mem=8MB"), "{facts}");
}

/// Objects of many kinds owned by `rm_owner`, with privileges, a policy and a user mapping for
/// `rm_reader`: what `--role-map` must carry over under the new names, whatever the kind.
const ROLE_ZOO: &str = r#"
CREATE EXTENSION postgres_fdw;
CREATE SERVER zoo_srv FOREIGN DATA WRAPPER postgres_fdw OPTIONS (dbname 'x');
ALTER SERVER zoo_srv OWNER TO rm_owner;
CREATE USER MAPPING FOR rm_reader SERVER zoo_srv OPTIONS (user 'u');
CREATE USER MAPPING FOR rm_owner SERVER zoo_srv;
SET ROLE rm_owner;
CREATE SCHEMA s;
CREATE TYPE s.mood AS ENUM ('sad', 'ok');
CREATE DOMAIN s.pos AS int CHECK (VALUE > 0);
CREATE TABLE s.t (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, m s.mood, p s.pos, note text);
INSERT INTO s.t (m, p, note) VALUES ('ok', 1, 'GRANT ALL ON s.t TO rm_reader;'), ('sad', 2, E'two\nlines');
CREATE TABLE s.parted (k int, v text) PARTITION BY RANGE (k);
CREATE TABLE s.parted_1 PARTITION OF s.parted FOR VALUES FROM (0) TO (100);
INSERT INTO s.parted VALUES (5, 'five');
CREATE SEQUENCE s.seq;
SELECT setval('s.seq', 42);
CREATE VIEW s.v AS SELECT id, note FROM s.t;
CREATE MATERIALIZED VIEW s.mv AS SELECT count(*) AS n FROM s.t;
CREATE FUNCTION s.f(a int) RETURNS int LANGUAGE sql AS $$ SELECT a + 1 $$;
CREATE FUNCTION s.trg() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
CREATE TRIGGER t_trg BEFORE INSERT ON s.t FOR EACH ROW EXECUTE FUNCTION s.trg();
CREATE AGGREGATE s.mysum(int) (sfunc = int4pl, stype = int);
CREATE TEXT SEARCH CONFIGURATION s.tsc (COPY = pg_catalog.english);
CREATE STATISTICS s.st ON m, p FROM s.t;
CREATE FOREIGN TABLE s.ft (a int) SERVER zoo_srv;
ALTER TABLE s.t ENABLE ROW LEVEL SECURITY;
CREATE POLICY pol ON s.t AS RESTRICTIVE FOR ALL TO rm_reader, rm_owner USING (note IS DISTINCT FROM 'rm_reader') WITH CHECK (true);
GRANT USAGE ON SCHEMA s TO rm_reader;
GRANT SELECT (id, note) ON s.t TO rm_reader WITH GRANT OPTION;
GRANT UPDATE (note) ON s.t TO rm_reader;
GRANT EXECUTE ON FUNCTION s.f(int) TO rm_reader;
REVOKE EXECUTE ON FUNCTION s.f(int) FROM PUBLIC;
GRANT USAGE ON TYPE s.mood TO rm_reader;
GRANT SELECT ON s.v, s.mv, s.ft TO rm_reader;
GRANT USAGE ON SEQUENCE s.seq TO rm_reader;
ALTER DEFAULT PRIVILEGES IN SCHEMA s GRANT SELECT ON TABLES TO rm_reader;
ALTER DEFAULT PRIVILEGES FOR ROLE rm_owner REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;
SELECT lo_from_bytea(0, 'large object data');
COMMENT ON TABLE s.t IS 'kept as it is: rm_owner';
"#;

#[test]
fn role_map_carries_every_kind_of_object_over_under_the_new_names() {
    let source = Cluster::start();
    source.exec("postgres", "CREATE ROLE rm_owner; CREATE ROLE rm_reader;");
    source.exec("postgres", "CREATE DATABASE zoo OWNER rm_owner");
    source.exec("zoo", ROLE_ZOO);
    // the source's schema with the names replaced is what the target must have (pg_dump's
    // comment lines, which name owners unquoted, aside; a comment's text and a literal in the
    // policy's expression stay as they were)
    let strip = |sql: String| {
        sql.lines()
            .filter(|l| !l.starts_with("--"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let want = strip(schema(&source, "zoo"))
        .replace("rm_owner", "\"New Owner\"")
        .replace("rm_reader", "new_reader")
        .replace(
            "'kept as it is: \"New Owner\"'",
            "'kept as it is: rm_owner'",
        )
        // the policy's expression is code: its literal stays
        .replace("'new_reader'::text", "'rm_reader'::text");
    let target = Cluster::start();
    target.exec(
        "postgres",
        r#"CREATE ROLE "New Owner"; CREATE ROLE new_reader;"#,
    );
    for format in ["custom", "plain"] {
        let store = TempDir::new("dr_role_zoo");
        let config = config_file(
            store.path(),
            &format!(
                "local.dir = \"{}\"\nformat = \"{format}\"\n[jobs.zoo]\nkind = \"daily\"\ndatabases = [\"zoo\"]\n",
                store.path().join("data").display()
            ),
        );
        let r = run(pgdrive()
            .env("PGDRIVE_CONFIG", &config)
            .env("DATABASE_URL", source.url("postgres", "postgres"))
            .env("PGDRIVE_PG_DUMP", format!("{BIN}/pg_dump"))
            .args(["backup", "--job", "zoo"]));
        assert_eq!(r.status, 0, "{format}: {r:?}");
        let names: Vec<String> = backup_files(&store.path().join("data"))
            .into_iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        let id = names.iter().find(|n| n.starts_with("zoo-daily-")).unwrap();
        let into = format!("zoo_{format}");
        // the job's globals object is not a database backup: said so, nothing created
        let globals = names
            .iter()
            .find(|n| n.starts_with("zoo-globals-"))
            .unwrap();
        let r = run(pgdrive()
            .args(["restore", globals, "--create", "--from"])
            .arg(store.path().join("data"))
            .args(["--target-url", &target.url("postgres", &into)]));
        assert_eq!(r.status, 78, "{r:?}");
        assert!(r.stderr.contains("restore --globals --job zoo"), "{r:?}");
        let r = run(pgdrive()
            .args(["restore", &id, "--create", "--from"])
            .arg(store.path().join("data"))
            .args(["--target-url", &target.url("postgres", &into)])
            .args([
                "--role-map",
                "rm_owner=New Owner",
                "--role-map",
                "rm_reader=new_reader",
            ]));
        assert_eq!(r.status, 0, "{format}: {r:?}");
        let got = strip(schema(&target, &into));
        if got != want {
            let only = |a: &str, b: &str| {
                a.lines()
                    .filter(|l| !b.lines().any(|m| m == *l))
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            panic!(
                "{format}: the restored schema differs\n--- only in the source's (names replaced):\n{}\n--- only in the restored:\n{}",
                only(&want, &got),
                only(&got, &want)
            );
        }
        assert_eq!(count(&target, &into, "SELECT count(*) FROM s.t"), 2);
        assert_eq!(count(&target, &into, "SELECT last_value FROM s.seq"), 42);
        assert_eq!(
            count(&target, &into, "SELECT count(*) FROM pg_largeobject_metadata WHERE pg_get_userbyid(lomowner) = 'New Owner' AND convert_from(lo_get(oid), 'UTF8') = 'large object data'"),
            1,
            "{format}"
        );
        assert!(
            database_facts(&target, &into).starts_with("New Owner / "),
            "{format}"
        );
    }
}

#[test]
fn a_backup_role_without_superuser_stores_globals_without_passwords_and_says_so() {
    let source = source_server();
    source.exec(
        "postgres",
        "CREATE ROLE backup LOGIN IN ROLE pg_read_all_data; GRANT CREATE ON SCHEMA public TO backup;
         GRANT CONNECT ON DATABASE shop TO backup",
    );
    let dir = TempDir::new("dr_store_nosu");
    let r = back_up(&source, "backup", dir.path(), "plain");
    assert_eq!(r.status, 0, "{r:?}");
    assert!(r.stderr.contains("--no-role-passwords"), "{r:?}");
    let globals = backup_files(dir.path())
        .into_iter()
        .find(|p| p.to_string_lossy().contains("-globals-"))
        .unwrap();
    let sql = std::fs::read_to_string(&globals).unwrap();
    assert!(sql.contains("CREATE ROLE \"app\""), "{sql}");
    assert!(!sql.contains("SCRAM-SHA-256"), "{sql}");
    let m: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{}.pgdrive.json", globals.display())).unwrap(),
    )
    .unwrap();
    assert_eq!(m["globals"]["passwords"], false, "{m}");
    // and `check` says so before the first backup
    let checked = run(pgdrive()
        .env("DATABASE_URL", source.url("backup", "postgres"))
        .env("PGDRIVE_LOCAL_DIR", dir.path())
        .arg("check"));
    assert!(
        checked
            .stdout
            .lines()
            .any(|l| l.contains("globals") && l.contains("--no-role-passwords")),
        "{checked:?}"
    );
}

/// The drill's clusters left in `tmp` (none, once it exited).
fn drill_dirs(tmp: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(tmp)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("pgdrive-drill-")
        })
        .collect()
}

fn postmasters_in(tmp: &Path) -> usize {
    let out = Command::new("pgrep")
        .args(["-f", &tmp.display().to_string()])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).lines().count()
}

#[test]
fn drill_reports_rto_and_rpo_and_leaves_nothing_behind_also_when_it_fails_or_is_stopped() {
    let source = source_server();
    let dir = TempDir::new("dr_store_drill");
    let r = back_up(&source, "postgres", dir.path(), "plain");
    assert_eq!(r.status, 0, "{r:?}");
    let tmp = TempDir::new("dr_tmp");
    let drill = |extra: &[&str]| {
        let mut cmd = pgdrive();
        cmd.env("TMPDIR", tmp.path())
            .args(["drill", "--job", "nightly", "--from"])
            .arg(dir.path())
            .args(extra);
        cmd
    };
    let r = run(&mut drill(&["--json"]));
    assert_eq!(r.status, 0, "{r:?}");
    let report: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap();
    assert_eq!(report["ok"], true, "{report}");
    assert!(report["rto_seconds"].as_f64().unwrap() > 0.0, "{report}");
    assert!(report["rpo_seconds"].as_f64().is_some(), "{report}");
    assert_eq!(report["rows"], 542, "{report}");
    assert!(drill_dirs(tmp.path()).is_empty());
    assert_eq!(postmasters_in(tmp.path()), 0);

    // a backup whose manifest disagrees with its data: the drill fails loudly, and cleans up
    let shop = backup_files(dir.path())
        .into_iter()
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("shop-")
        })
        .unwrap();
    let sidecar = PathBuf::from(format!("{}.pgdrive.json", shop.display()));
    let text = std::fs::read_to_string(&sidecar).unwrap();
    std::fs::write(
        &sidecar,
        text.replace("\"app.orders\": 500", "\"app.orders\": 499"),
    )
    .unwrap();
    let r = run(&mut drill(&[]));
    assert_eq!(r.status, 1, "{r:?}");
    assert!(drill_dirs(tmp.path()).is_empty());
    assert_eq!(postmasters_in(tmp.path()), 0);
    std::fs::write(&sidecar, text).unwrap();

    // SIGTERM while it restores: the cluster and its directory are gone when it exits
    let child = drill(&[])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while drill_dirs(tmp.path()).is_empty() || postmasters_in(tmp.path()) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the drill never started a cluster"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let (out, _) = exit_within(child, std::time::Duration::from_secs(30));
    assert_ne!(out.status.code(), Some(0));
    assert!(
        drill_dirs(tmp.path()).is_empty(),
        "{:?}",
        drill_dirs(tmp.path())
    );
    assert_eq!(postmasters_in(tmp.path()), 0);
}

#[test]
fn a_job_that_stores_no_database_stores_no_globals_either() {
    let source = source_server();
    let dir = TempDir::new("dr_store_none");
    let conf = TempDir::new("dr_conf_none");
    // a pg_dump that answers for its version but dumps nothing: every database backup fails
    // while the globals (pg_dumpall beside it) are dumped
    let bin = TempDir::new("dr_bin_none");
    let failing = bin.path().join("pg_dump");
    std::fs::write(
        &failing,
        format!(
            "#!/bin/sh\nif [ \"$1\" = --version ]; then exec {BIN}/pg_dump --version; fi\nexit 1\n"
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&failing, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink(format!("{BIN}/pg_dumpall"), bin.path().join("pg_dumpall")).unwrap();
    let job = |databases: &str, pg_dump: &Path| {
        let config = config_file(
            conf.path(),
            &format!(
                "local.dir = \"{}\"\n[jobs.nightly]\nkind = \"daily\"\ndatabases = [{databases}]\n",
                dir.path().display()
            ),
        );
        run(pgdrive()
            .env("PGDRIVE_CONFIG", &config)
            .env("DATABASE_URL", source.url("postgres", "postgres"))
            .env("PGDRIVE_PG_DUMP", pg_dump)
            .args(["backup", "--job", "nightly"]))
    };
    let globals_objects = || {
        backup_files(dir.path())
            .into_iter()
            .filter(|p| p.to_string_lossy().contains("-globals-"))
            .count()
    };
    // every database of the job fails: the globals are dumped but not stored
    let r = job("\"shop\"", &failing);
    assert_ne!(r.status, 0, "{r:?}");
    assert!(!r.stderr.contains("globals stored"), "{r:?}");
    assert!(
        r.stderr.contains("no database of the job was stored"),
        "{r:?}"
    );
    assert_eq!(globals_objects(), 0, "{:?}", backup_files(dir.path()));
    // one of two is stored: the globals are stored, after it
    let real = PathBuf::from(format!("{BIN}/pg_dump"));
    let r = job("\"shop\", \"no_such_db\"", &real);
    assert_ne!(r.status, 0, "{r:?}");
    assert_eq!(globals_objects(), 1, "{r:?}");
    let globals_at = r.stderr.find("globals stored").expect("globals stored");
    let failed_at = r
        .stderr
        .rfind("no_such_db")
        .expect("the failed database logged");
    assert!(failed_at < globals_at, "{r:?}");
}

#[test]
fn a_drill_is_recorded_in_the_catalog_shown_by_status_and_notified_passed_or_failed() {
    let source = source_server();
    let dir = TempDir::new("dr_store_drill_rec");
    let r = back_up(&source, "postgres", dir.path(), "plain");
    assert_eq!(r.status, 0, "{r:?}");
    let hooks = crate::notify::Receiver::start();
    let tmp = TempDir::new("dr_tmp_rec");
    let catalog = source.url("postgres", "postgres");
    // the catalog is where the backups were recorded: the job's configured database
    let drill = || {
        run(pgdrive()
            .env("TMPDIR", tmp.path())
            .env("DATABASE_URL", &catalog)
            .env("PGDRIVE_WEBHOOK_URL", hooks.url("hook"))
            .args(["drill", "--job", "nightly", "--from"])
            .arg(dir.path()))
    };
    let verify_results = || -> Vec<(String, Option<String>)> {
        let mut c = postgres::Client::connect(&catalog, postgres::NoTls).unwrap();
        c.query(
            "SELECT database_name, verify_result FROM backups WHERE status = 'SUCCESS' ORDER BY id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
    };
    let status = |html: &Path| {
        run(pgdrive()
            .env("DATABASE_URL", &catalog)
            .env("PGDRIVE_LOCAL_DIR", dir.path())
            .args(["status", "--html"])
            .arg(html))
    };

    let r = drill();
    assert_eq!(r.status, 0, "{r:?}");
    let rows = verify_results();
    assert!(!rows.is_empty());
    for (db, result) in &rows {
        let result = result.as_deref().unwrap_or("");
        assert!(
            result.starts_with("drill passed")
                && result.contains("RTO ")
                && result.contains("RPO "),
            "{db:?}: {result:?}"
        );
    }
    let sent = hooks.json_posted_to("/hook");
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0]["status"], "success", "{sent:?}");
    assert!(
        sent[0]["message"].as_str().unwrap().contains("drill"),
        "{sent:?}"
    );
    assert!(
        sent[0]["drill"].as_str().unwrap().contains("RTO "),
        "{sent:?}"
    );
    let html = tmp.path().join("status.html");
    let st = status(&html);
    assert!(
        st.stdout.contains("last drill") && st.stdout.contains("drill passed"),
        "{st:?}"
    );
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(
        page.contains("last disaster-recovery drill") && page.contains("RTO "),
        "{page}"
    );

    // a backup whose manifest disagrees with its data: failed, recorded, notified, exit 1
    let shop = backup_files(dir.path())
        .into_iter()
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("shop-")
        })
        .unwrap();
    let sidecar = PathBuf::from(format!("{}.pgdrive.json", shop.display()));
    let text = std::fs::read_to_string(&sidecar).unwrap();
    std::fs::write(
        &sidecar,
        text.replace("\"app.orders\": 500", "\"app.orders\": 499"),
    )
    .unwrap();
    let r = drill();
    assert_eq!(r.status, 1, "{r:?}");
    let sent = hooks.json_posted_to("/hook");
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!(sent[1]["status"], "failure", "{sent:?}");
    assert!(
        sent[1]["drill"].as_str().unwrap().contains("499"),
        "{sent:?}"
    );
    assert!(verify_results()
        .iter()
        .all(|(_, r)| r.as_deref().unwrap_or("").starts_with("drill FAILED")));
    let st = status(&html);
    assert!(
        st.stdout.contains("last drill") && st.stdout.contains("drill FAILED"),
        "{st:?}"
    );
    assert!(!st.stdout.contains("app-secret-pw"));
}
