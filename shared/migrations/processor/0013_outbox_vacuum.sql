-- Every downstream event is inserted into the outbox and deleted once confirmed, so under load the
-- table is all dead rows: a 1,000,000-event backfill left it at 435 MB with 750,000 dead tuples
-- and slowed every insert and delete. Vacuum it after every 1,000 dead rows, without the cost
-- delay, so it stays the size of what is in flight.
ALTER TABLE outbox SET (
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0,
    autovacuum_vacuum_insert_threshold = 1000,
    autovacuum_vacuum_cost_delay = 0
);
