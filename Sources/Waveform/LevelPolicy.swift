/// Which levels a wearer may use (rule 8): a new wearer starts at level 1; levels 2 and 3
/// unlock after configured numbers of completed sessions; the remote `maxLevel` caps both.
public struct LevelPolicy: Sendable, Hashable {
    public var unlock: CalibrationProfile.LevelUnlock
    /// The remote cap (1-3).
    public var maxLevel: Int

    public init(unlock: CalibrationProfile.LevelUnlock, maxLevel: Int = 3) {
        self.unlock = unlock
        self.maxLevel = min(3, max(1, maxLevel))
    }

    /// The highest level unlocked after `completedSessions`.
    public func unlockedLevel(completedSessions: Int) -> Int {
        if completedSessions >= unlock.level3AfterSessions { return 3 }
        if completedSessions >= unlock.level2AfterSessions { return 2 }
        return 1
    }

    /// The highest level allowed now.
    public func allowedLevel(completedSessions: Int) -> Int {
        min(maxLevel, unlockedLevel(completedSessions: completedSessions))
    }
}
