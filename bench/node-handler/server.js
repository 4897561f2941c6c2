// The usual Node webhook handler, as Stripe's docs show it: express with a raw body,
// stripe.webhooks.constructEvent to verify, then one INSERT ... ON CONFLICT (id) DO NOTHING per
// request before the 200, into a table of its own keyed on the event id (made at start, with no
// other index: the handler only stores). bench/run.sh drives it with the same load as
// billing-service.
//
// Environment: PORT, DATABASE_URL, STRIPE_WEBHOOK_SECRET.
'use strict';

const express = require('express');
const Stripe = require('stripe');
const { Pool } = require('pg');

const stripe = new Stripe('sk_test_bench');
const secret = process.env.STRIPE_WEBHOOK_SECRET;
// node-postgres defaults to 10 connections, as does billing-service's pool.
const pool = new Pool({ connectionString: process.env.DATABASE_URL, max: 10 });
const app = express();

app.get('/status/ready', async (_req, res) => {
  try {
    await pool.query('SELECT 1');
    res.json({ ready: 'OK' });
  } catch (e) {
    res.status(503).json({ ready: 'unavailable' });
  }
});

app.post('/webhook/stripe', express.raw({ type: '*/*', limit: '1mb' }), async (req, res) => {
  let event;
  try {
    event = stripe.webhooks.constructEvent(req.body, req.headers['stripe-signature'], secret);
  } catch (e) {
    return res.status(400).json({ error: { code: 'bad_signature', message: e.message } });
  }
  try {
    const result = await pool.query(
      `INSERT INTO node_stripe_events
         (id, type, created, livemode, api_version, account, object_id, payload, received_at_ms)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
       ON CONFLICT (id) DO NOTHING`,
      [
        event.id,
        event.type,
        event.created,
        event.livemode,
        event.api_version || null,
        event.account || null,
        (event.data && event.data.object && event.data.object.id) || null,
        req.body.toString('utf8'),
        Date.now(),
      ],
    );
    res.json({ received: true, id: event.id, duplicate: result.rowCount === 0 });
  } catch (e) {
    res.status(503).json({ error: { code: 'database_unavailable', message: 'try again' } });
  }
});

const ready = pool.query(`CREATE TABLE IF NOT EXISTS node_stripe_events (
  id TEXT PRIMARY KEY, type TEXT NOT NULL, created BIGINT NOT NULL, livemode BOOLEAN NOT NULL,
  api_version TEXT, account TEXT, object_id TEXT, payload TEXT NOT NULL,
  received_at_ms BIGINT NOT NULL)`);
let server;
ready.then(() => {
  server = app.listen(Number(process.env.PORT || 3000), '127.0.0.1');
}, (e) => {
  console.error('cannot create node_stripe_events:', e.message);
  process.exit(1);
});
process.on('SIGTERM', () => {
  if (!server) process.exit(0);
  server.close(() => pool.end().then(() => process.exit(0)));
});
