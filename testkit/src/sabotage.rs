//! Faults PostgreSQL itself raises: a trigger that makes it fail the writes a test picks, as a
//! broken constraint (`check_violation`: a refusal) or a failure that may pass later (`P0001`)
//! would.

use sqlx::PgPool;

/// Makes PostgreSQL fail the rows matching `when` (SQL over `NEW`) with `errcode` and
/// `message`, on `on` (e.g. `BEFORE INSERT OR UPDATE ON products`), by a trigger named `name`
/// (`DROP TRIGGER {name} ON {table}` repairs it).
pub async fn writes(pool: &PgPool, name: &str, on: &str, when: &str, errcode: &str, message: &str) {
    let function = format!(
        "CREATE OR REPLACE FUNCTION {name}() RETURNS trigger AS $$
         BEGIN
           IF {when} THEN
             RAISE EXCEPTION '{message}' USING ERRCODE = '{errcode}';
           END IF;
           RETURN NEW;
         END $$ LANGUAGE plpgsql"
    );
    let trigger = format!("CREATE TRIGGER {name} {on} FOR EACH ROW EXECUTE FUNCTION {name}()");
    for statement in [function, trigger] {
        sqlx::query(sqlx::AssertSqlSafe(statement))
            .execute(pool)
            .await
            .expect("the sabotage is in place");
    }
}
