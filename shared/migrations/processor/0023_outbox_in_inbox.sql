-- Fewer writes per applied event (issue 32): the downstream events an event caused are kept on
-- its inbox row, written with it, instead of in an outbox row each that was inserted, indexed
-- twice, deleted after the broker's confirm and vacuumed. A source that comes back (redelivered
-- after a crash between commit and publish, or sent again) is a duplicate, and publishes what
-- its row holds again; the events' ids are stable, so every consumer drops one it has seen.
ALTER TABLE processed_events ADD COLUMN announcements text[];

-- What the outbox still holds (its source's publish had not been confirmed) moves to its
-- source's inbox row, to be published when the source comes back.
UPDATE processed_events p SET announcements = o.bodies
FROM (SELECT source_kind, source_owner, source_event_id,
             array_agg(payload ORDER BY seq) AS bodies
      FROM outbox GROUP BY source_kind, source_owner, source_event_id) o
WHERE p.kind = o.source_kind AND p.owner = o.source_owner AND p.event_id = o.source_event_id;

DROP TABLE outbox;
