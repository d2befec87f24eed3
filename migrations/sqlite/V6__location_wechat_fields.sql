-- What wx.getLocation reports beside the position (issue 17): speed (m/s),
-- altitude (m) and the vertical/horizontal accuracies (m), when present.
ALTER TABLE location_logs ADD COLUMN speed REAL;
ALTER TABLE location_logs ADD COLUMN altitude REAL;
ALTER TABLE location_logs ADD COLUMN vertical_accuracy REAL CHECK (vertical_accuracy >= 0);
ALTER TABLE location_logs ADD COLUMN horizontal_accuracy REAL CHECK (horizontal_accuracy >= 0);
