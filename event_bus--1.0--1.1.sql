/*
 * event_bus upgrade from 1.0 to 1.1.
 *
 * Every schema change made since 1.0 is here and in src/sql/ (from which the
 * 1.1 install script is built); test/t/050_upgrade.pl checks that an upgraded
 * database ends up with exactly the catalog of a fresh 1.1 install.
 */

\echo Use "ALTER EXTENSION event_bus UPDATE TO '1.1'" to load this file. \quit
