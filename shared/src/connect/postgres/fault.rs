//! Whose fault a PostgreSQL error is, by its SQLSTATE class: the one reading every consumer
//! uses to choose between holding a message until PostgreSQL is back and setting it aside.

/// What a failed statement says about the message it was for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// PostgreSQL is unreachable, starting, stopping, out of resources, or the schema is not
    /// ready: not the message's fault; hold it and try again.
    Outage,
    /// PostgreSQL refused the message's data: a data exception (class `22`: a NUL byte in
    /// text, a value out of range) or an integrity constraint (class `23`: a missing parent
    /// row). Trying again gives the same answer; set it aside.
    Refused,
    /// The statement lost a race (class `40`: serialization failure, deadlock) or a trigger
    /// raised (`P0`): it may pass when tried again.
    Conflict,
}

impl Fault {
    /// The fault `error` is.
    pub fn of(error: &sqlx::Error) -> Self {
        let class = match error {
            // A column that does not hold what the statement said: the row's data.
            sqlx::Error::Decode(_) => Some("22".to_owned()),
            sqlx::Error::Database(db) => db.code().map(|code| code.chars().take(2).collect()),
            _ => None,
        };
        match class.as_deref() {
            Some("22" | "23") => Self::Refused,
            Some("40" | "P0") => Self::Conflict,
            _ => Self::Outage,
        }
    }

    /// True unless PostgreSQL refused the data: what a hold retries.
    pub fn worth_retrying(error: &sqlx::Error) -> bool {
        Self::of(error) != Self::Refused
    }
}

#[cfg(test)]
mod tests {
    use super::Fault;

    #[test]
    fn errors_without_a_sqlstate_are_outages() {
        for error in [
            sqlx::Error::PoolTimedOut,
            sqlx::Error::PoolClosed,
            sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)),
        ] {
            assert_eq!(Fault::of(&error), Fault::Outage, "{error}");
            assert!(Fault::worth_retrying(&error));
        }
    }

    #[test]
    fn a_column_that_does_not_decode_is_the_data() {
        let error = sqlx::Error::Decode("not an integer".into());
        assert_eq!(Fault::of(&error), Fault::Refused);
        assert!(!Fault::worth_retrying(&error));
    }
}
