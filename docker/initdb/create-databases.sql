-- Run once by the postgres image on an empty data volume: one database for posteval's results, one for
-- Prefect's own state, both owned by the compose user.
CREATE DATABASE posteval;
CREATE DATABASE prefect;
