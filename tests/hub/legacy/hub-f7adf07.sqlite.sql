PRAGMA foreign_keys=OFF;
BEGIN TRANSACTION;
CREATE TABLE readings (
    ts REAL NOT NULL,            -- seconds since the epoch, UTC
    substation TEXT NOT NULL,
    device_id TEXT NOT NULL,
    metric TEXT NOT NULL,
    value REAL,
    unit TEXT NOT NULL,
    quality REAL NOT NULL,
    flags INTEGER NOT NULL,
    source TEXT NOT NULL,        -- edge id, or 'http' / 'mqtt'
    seq INTEGER                  -- the edge's sequence number, NULL for other sources
);
INSERT INTO readings VALUES(1795161600.0,'SUB-A','TX-1','oil_temperature',61.0,'°C',1.0,0,'edge-a',1);
INSERT INTO readings VALUES(1795161600.0,'SUB-A','TX-1','voltage_l1',11.019999999999999573,'kV',1.0,0,'edge-a',2);
INSERT INTO readings VALUES(1795161610.0,'SUB-A','TX-1','oil_temperature',61.100000000000001419,'°C',1.0,0,'edge-a',3);
INSERT INTO readings VALUES(1795161610.0,'SUB-A','TX-1','voltage_l1',11.119999999999999218,'kV',1.0,0,'edge-a',4);
INSERT INTO readings VALUES(1795161620.0,'SUB-A','TX-1','oil_temperature',61.200000000000002843,'°C',1.0,0,'edge-a',5);
INSERT INTO readings VALUES(1795161620.0,'SUB-A','TX-1','voltage_l1',11.219999999999998863,'kV',1.0,0,'edge-a',6);
INSERT INTO readings VALUES(1795161630.0,'SUB-A','TX-1','oil_temperature',61.299999999999997156,'°C',1.0,0,'edge-a',7);
INSERT INTO readings VALUES(1795161630.0,'SUB-A','TX-1','voltage_l1',11.320000000000000284,'kV',1.0,0,'edge-a',8);
INSERT INTO readings VALUES(1795161640.0,'SUB-A','TX-1','oil_temperature',61.39999999999999858,'°C',1.0,0,'edge-a',9);
INSERT INTO readings VALUES(1795161640.0,'SUB-A','TX-1','voltage_l1',11.419999999999999928,'kV',1.0,0,'edge-a',10);
INSERT INTO readings VALUES(1795161650.0,'SUB-A','TX-1','oil_temperature',61.5,'°C',1.0,0,'edge-a',11);
INSERT INTO readings VALUES(1795161650.0,'SUB-A','TX-1','voltage_l1',11.519999999999999574,'kV',1.0,0,'edge-a',12);
INSERT INTO readings VALUES(1795161900.0,'SUB-B','FEEDER-7','current_l1',182.5,'A',1.0,0,'http',NULL);
CREATE TABLE events (
    ts REAL NOT NULL,
    substation TEXT NOT NULL,
    device_id TEXT NOT NULL,
    metric TEXT NOT NULL,
    type TEXT NOT NULL,
    state TEXT NOT NULL,
    severity TEXT NOT NULL,
    value REAL,
    threshold REAL,
    nominal REAL,
    unit TEXT NOT NULL,
    description TEXT NOT NULL,
    edge_id TEXT NOT NULL,
    seq INTEGER NOT NULL
);
INSERT INTO events VALUES(1795161630.0,'SUB-A','TX-1','voltage_l1','voltage_swell','raised','WARNING',11.900000000000000355,11.55000000000000071,NULL,'kV','voltage_l1 11.9 kV above 11.55 kV','edge-a',1);
CREATE TABLE incidents (
    number INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    type TEXT NOT NULL,
    device_id TEXT NOT NULL,
    severity TEXT NOT NULL,
    description TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'OPEN',
    agent TEXT NOT NULL,
    substation TEXT NOT NULL,
    metric TEXT NOT NULL,
    value REAL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
INSERT INTO incidents VALUES(1,1795161630.0,'overvoltage','TX-1','WARNING','Overvoltage on TX-1 voltage_l1: 11.9 kV','OPEN','grid_monitor','SUB-A','voltage_l1',11.900000000000000355,1796538843.2092490195,1796538843.2092490195);
INSERT INTO incidents VALUES(2,1795161900.0,'overcurrent','FEEDER-7','CRITICAL','Overcurrent on FEEDER-7','OPEN','grid_monitor','SUB-B','current_l1',182.5,1796538843.2092490195,1796538843.2092490195);
CREATE TABLE dead_letters (
    number INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,            -- when it was received, seconds since the epoch, UTC
    source TEXT NOT NULL,        -- who received it: '<device>@<broker>' (edge), 'hub@<broker>'
    topic TEXT NOT NULL,
    payload TEXT NOT NULL,       -- as text, cut at 64 KiB
    reason TEXT NOT NULL
);
INSERT INTO dead_letters VALUES(1,1795161960.0,'mqtt','grid/SUB-B/x','{not json','not JSON: unexpected character');
CREATE TABLE edge_sync (
    edge_id TEXT PRIMARY KEY,
    substation TEXT NOT NULL,
    readings_acked_through INTEGER NOT NULL DEFAULT 0,
    events_acked_through INTEGER NOT NULL DEFAULT 0,
    gaps INTEGER NOT NULL DEFAULT 0,
    last_sync REAL
);
INSERT INTO edge_sync VALUES('edge-a','SUB-A',12,1,0,1796538843.2091510296);
DELETE FROM sqlite_sequence;
INSERT INTO sqlite_sequence VALUES('incidents',2);
INSERT INTO sqlite_sequence VALUES('dead_letters',1);
CREATE INDEX readings_device_metric_ts ON readings (device_id, metric, ts);
CREATE INDEX incidents_status_severity ON incidents (status, severity);
COMMIT;
