@kubernetes-auth
Feature: Kubernetes auth after a restore
  A snapshot carries the old cluster's Kubernetes auth configuration. After a
  restore, apps must still log in with their service-account tokens, and a
  service account the role does not bind must still be refused.

  Scenario: apps log in after the cluster restored itself
    Given a healthy stack
    And secrets written before the newest snapshot
    When every volume is deleted
    Then the cluster restores itself within the objective
    And an app can log in with kubernetes auth and read its secret
    And a service account that is not bound is refused
